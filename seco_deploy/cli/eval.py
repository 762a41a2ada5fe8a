"""`seco eval`: score folders of index-PNG masks against ground truth (method §3.4)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from seco_deploy.cli.common import EXIT_PARTIAL, EXIT_USAGE, console, fail
from seco_deploy.console import Console

if TYPE_CHECKING:  # the metrics module imports torch; keep `seco --help` fast
    from seco_deploy.metrics import FolderEvaluation

MAX_LISTED = 10  # problem files named on screen per kind (all of them go to --json)


def evaluate(
    pred_dir: Path = typer.Argument(..., help="Folder of predicted index PNGs."),
    gt: Path = typer.Option(..., "--gt", help="Folder of ground-truth index PNGs."),
    classes: Path | None = typer.Option(None, "--classes", help="classes.txt (background first)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the figures as JSON here."),
    ignore_index: int = typer.Option(255, "--ignore-index", help="Ground-truth value that is not scored."),
) -> None:
    """mIoU, per-class IoU, precision, recall and FP:TP of predicted masks.

    Files are paired by name. mIoU averages the classes present in the ground truth. Missing,
    extra, unreadable or differently sized files are listed and skipped; the exit code is then 3.
    """
    from seco_deploy.data.datasets import read_classes_txt
    from seco_deploy.metrics import evaluate_folders

    names: list[str] | None = None
    if classes is not None:
        if not classes.is_file():
            fail(f"--classes {classes} does not exist")
        try:
            names = read_classes_txt(classes)
        except (ValueError, OSError) as exc:
            fail(str(exc))
    for folder, option in ((pred_dir, "PRED_DIR"), (gt, "--gt")):
        if not folder.is_dir():
            fail(f"{option} {folder} is not a folder")
    with Progress(
        TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("eval", total=None)
        result = evaluate_folders(
            pred_dir,
            gt,
            num_classes=len(names) if names else None,
            ignore_index=ignore_index,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if result.evaluated == 0:
        _print_problems(result)
        fail(f"no prediction in {pred_dir} could be paired with a ground-truth mask in {gt}", EXIT_USAGE)
    _print_table(result, names)
    _print_problems(result)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.to_dict(names), indent=2) + "\n", encoding="utf-8")
    if result.problems:
        raise typer.Exit(EXIT_PARTIAL)


def _fmt(x: float, percent: bool = True) -> str:
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{100 * x:.2f}" if percent else f"{x:.3f}"


def _print_table(result: FolderEvaluation, names: list[str] | None) -> None:
    s = result.scores
    table = Table(title=f"{result.evaluated} images, mIoU {_fmt(s['miou'])}%, pixel accuracy {_fmt(s['pixel_acc'])}%")
    for col in ("#", "class", "IoU %", "precision %", "recall %", "FP:TP", "GT pixels"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for k in range(result.num_classes):
        name = names[k] if names else str(k)
        style = None if s["present"][k] else "dim"
        table.add_row(
            str(k),
            name,
            _fmt(s["iou"][k]),
            _fmt(s["precision"][k]),
            _fmt(s["recall"][k]),
            _fmt(s["fp_tp"][k], percent=False),
            str(s["gt_pixels"][k]),
            style=style,
        )
    Console().print(table)


def _print_problems(result: FolderEvaluation) -> None:
    kinds = (
        ("missing prediction for", result.missing),
        ("prediction without ground truth", result.extra),
        ("size mismatch", result.size_mismatch),
        ("unreadable", result.unreadable),
    )
    for label, items in kinds:
        if items:
            shown = ", ".join(items[:MAX_LISTED])
            if len(items) > MAX_LISTED:
                shown += f", ... ({len(items) - MAX_LISTED} more)"
            console.print(f"[yellow]warning:[/] {len(items)} {label}: {shown}", highlight=False)
    if result.gt_out_of_range:
        console.print(
            f"[yellow]warning:[/] {result.gt_out_of_range} ground-truth pixels hold a class index beyond "
            f"--classes ({result.num_classes} classes) and were skipped",
            highlight=False,
        )
