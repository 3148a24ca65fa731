"""The `fineprep` command. Each sub-command lives in `fineprep.commands.<name>` and registers itself."""

from __future__ import annotations

import typer

from .commands import describe, extract, inspect, synth

app = typer.Typer(
    name="fineprep",
    help="Preprocess DFER datasets (DFEW, FERV39k, MAFW, your own clips) into a Zarr + Parquet store.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (synth, extract, inspect, describe):
    module.register(app)

if __name__ == "__main__":
    app()
