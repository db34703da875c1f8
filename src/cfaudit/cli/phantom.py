"""Placeholder until its command lands (being written in this change)."""

import typer


def register(app: typer.Typer) -> None:
    del app
