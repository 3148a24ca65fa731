"""The `finetrain` command. Each sub-command lives in `finetrain.commands.<name>` and registers itself."""

from __future__ import annotations

import typer

from .commands import configs, evaluate, run

app = typer.Typer(
    name="finetrain",
    help="Train and evaluate CLIP adapters for dynamic facial expression recognition on a fineprep store.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (run, evaluate, configs):
    module.register(app)

if __name__ == "__main__":
    app()
