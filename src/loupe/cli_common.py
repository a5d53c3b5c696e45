"""Helpers shared by the CLI modules (``cli.py``, ``cli_exports.py``)."""

from __future__ import annotations

from typing import Any

import typer

from loupe.errors import LoupeError


def _settings() -> Any:
    from pydantic import ValidationError

    from loupe.plugins import load_plugins
    from loupe.settings import get_settings

    load_plugins()

    try:
        settings = get_settings()
    except ValidationError as exc:
        msg = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        typer.secho(f"error: {msg}", fg="red", err=True)
        raise typer.Exit(2) from exc
    settings.ensure_dirs()
    return settings


def _migrated_settings() -> Any:
    from loupe.db.migrate import upgrade

    settings = _settings()
    upgrade(settings.db_url)
    return settings


def _fail(exc: LoupeError) -> typer.Exit:
    typer.secho(f"error: {exc.message}", fg="red", err=True)
    return typer.Exit(1)
