"""`seco demo`."""

from __future__ import annotations

from pathlib import Path

import typer

from seco_deploy.cli.common import not_built


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Demo folder."),
    minutes: float = typer.Option(10.0, "--minutes", help="Training time budget."),
) -> None:
    """Synthesise data, train, export, predict and evaluate; write a report."""
    not_built("demo")
