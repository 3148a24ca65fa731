"""Placeholder: this sub-command registers nothing yet."""

import typer


def register(app: typer.Typer) -> None:
    return None
