"""`seco export`."""

from __future__ import annotations

from pathlib import Path

import typer

from seco_deploy.cli.common import not_built


def export(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt) to export."),
    format: str = typer.Option("onnx", "--format", help="onnx | trt"),
    out: Path | None = typer.Option(None, "--out", help="Output file (model.onnx / model.engine)."),
    heads: str = typer.Option("seg", "--heads", help="seg or seg,cam"),
    dynamic: bool = typer.Option(True, "--dynamic/--static", help="Dynamic batch, height and width."),
    size: int | None = typer.Option(None, "--size", help="Export / static input side (default: crop size)."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset."),
    fp16: bool = typer.Option(False, "--fp16", help="Half precision."),
    simplify: bool = typer.Option(False, "--simplify", help="Fold constants in the graph."),
    check: bool = typer.Option(True, "--check/--no-check", help="Parity check against PyTorch."),
) -> None:
    """Export the segmentation branch (and optionally the CAM branch) to ONNX or TensorRT."""
    not_built("export")
