"""`seco info`."""

from __future__ import annotations

from pathlib import Path

import typer

from seco_deploy.cli.common import not_built


def info(model: Path = typer.Argument(..., help="Checkpoint, model.onnx or model.engine.")) -> None:
    """Show what a model file holds."""
    not_built("info")
