"""`finetrain configs`: the presets with their streams and the paper row each reproduces; and the
resolved config of a preset plus overrides (`finetrain configs --show NAME key=value ...`), which is
also what `finetrain run --print-config` prints."""

from __future__ import annotations

import typer


def presets_table():
    """A rich Table: preset, backbone, weights, streams and the paper row they make."""
    from rich.table import Table

    from ..config import load_config, preset_names
    from ..train.streams import paper_row

    table = Table(title="finetrain presets (trainer/finetrain/configs/)")
    table.add_column("preset", no_wrap=True)
    for column in ("backbone", "weights", "streams", "paper row"):
        table.add_column(column)
    for name in preset_names():
        cfg = load_config(name)
        table.add_row(name, cfg.model.backbone, cfg.model.pretrained or "random", ", ".join(cfg.model.streams),
                      paper_row(cfg.model.streams) or "–")
    return table


def resolved_yaml(config: str | None, overrides: list[str]) -> str:
    import yaml

    from ..config import load_config

    return yaml.safe_dump(load_config(config, overrides).to_dict(), sort_keys=False)


def register(app: typer.Typer) -> None:
    @app.command("configs")
    def configs(
        show: str = typer.Option(None, "--show", help="Print this preset (or YAML file) resolved, with overrides."),
        overrides: list[str] = typer.Argument(None, help="section.key=value settings applied to --show."),
    ) -> None:
        """List the training presets, or print one resolved."""
        from rich.console import Console

        from ..errors import FinetrainError

        try:
            if show is None:
                Console().print(presets_table())
            else:
                typer.echo(resolved_yaml(show, list(overrides or [])), nl=False)
        except FinetrainError as exc:
            Console(stderr=True).print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
