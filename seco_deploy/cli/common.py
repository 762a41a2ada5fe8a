"""Shared CLI helpers: exit codes and error reporting."""

from __future__ import annotations

from typing import NoReturn

import typer

from seco_deploy.console import Console

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_PARITY = 4
EXIT_MISSING_RUNTIME = 5

console = Console(stderr=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``message`` as an error and exit with ``code``."""
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def parse_scales(text: str | None, option: str = "--scales") -> tuple[float, ...] | None:
    """``"1.0,1.5"`` -> ``(1.0, 1.5)``; None stays None; anything else fails naming ``option`` (exit 2)."""
    if text is None:
        return None
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        fail(f"{option} {text!r} must be comma-separated numbers, e.g. 1.0,1.25,1.5")
    if not scales or min(scales) <= 0:
        fail(f"{option} {text!r} must list positive numbers, e.g. 1.0,1.25,1.5")
    return scales
