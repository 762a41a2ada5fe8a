"""`seco predict`."""

from __future__ import annotations

from pathlib import Path

import typer

from seco_deploy.cli.common import not_built


def predict(
    source: str = typer.Argument(..., help="Folder, glob, single image, or .txt list of paths."),
    model: Path = typer.Option(..., "--model", help="Checkpoint (.pt), model.onnx or model.engine."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    mode: str = typer.Option("mask", "--mode", help="mask | pseudo"),
    tags: Path | None = typer.Option(None, "--tags", help="tags.csv with image-level tags (pseudo mode)."),
    scales: str | None = typer.Option(None, "--scales", help="Comma-separated TTA scales."),
    flip: bool = typer.Option(True, "--flip/--no-flip", help="Horizontal-flip TTA."),
    crf: bool = typer.Option(False, "--crf", help="Dense-CRF refinement."),
    overlay: bool = typer.Option(False, "--overlay", help="Write overlays/NAME.jpg."),
    batch: int = typer.Option(4, "--batch", help="Images per forward pass."),
    shard: str | None = typer.Option(None, "--shard", help="i/n: take the i-th of n slices of the inputs."),
) -> None:
    """Write masks or pseudo-labels for images."""
    not_built("predict")
