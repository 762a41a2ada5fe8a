"""`seco eval`."""

from __future__ import annotations

from pathlib import Path

import typer

from seco_deploy.cli.common import not_built


def evaluate(
    pred_dir: Path = typer.Argument(..., help="Folder of predicted index PNGs."),
    gt: Path = typer.Option(..., "--gt", help="Folder of ground-truth index PNGs."),
    classes: Path | None = typer.Option(None, "--classes", help="classes.txt (background first)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the figures as JSON here."),
) -> None:
    """mIoU, per-class IoU, precision, recall and FP:TP of predicted masks."""
    not_built("eval")
