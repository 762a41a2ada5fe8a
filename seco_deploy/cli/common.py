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

