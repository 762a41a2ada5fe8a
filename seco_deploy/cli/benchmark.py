"""`seco benchmark`: every deployment format of a checkpoint side by side (accuracy, speed, memory, size)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from seco_deploy.cli.common import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, console, fail
from seco_deploy.console import Console


def _say(text: str) -> None:
    console.print(escape(text), highlight=False, soft_wrap=True)


def benchmark(
    model: Path = typer.Option(..., "--model", help="Checkpoint (.pt) from seco train."),
    data: Path = typer.Option(..., "--data", help="Folder of images or a VOC-layout set (masks give mIoU)."),
    formats: str | None = typer.Option(
        None, "--formats", help="Comma-separated: torch, torch-bf16, onnx, onnx-fp16, onnx-int8, opencv, trt-fp16 "
        "(default: all; one this machine cannot run is a row saying why)."
    ),
    images: int = typer.Option(50, "--images", help="Images to predict, spread evenly over --data."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for benchmark.json, benchmark.md and runs/ (default: the export cache)."
    ),
    cache: Path | None = typer.Option(
        None, "--cache", help="Exported files, reused while the checkpoint is the same (default: MODEL_DIR/STEM.bench)."
    ),
    calib: Path | None = typer.Option(None, "--calib", help="onnx-int8 calibration images (default: --data)."),
    calib_images: int = typer.Option(32, "--calib-images", help="onnx-int8: how many images calibrate."),
    threads: int | None = typer.Option(None, "--threads", help="Model CPU threads (default: seco predict's)."),
    batch: int | None = typer.Option(None, "--batch", help="Images per batch (default: the model's, as predict)."),
    workers: int | None = typer.Option(None, "--workers", help="Decoding processes (default: seco predict's)."),
    latency_images: int = typer.Option(20, "--latency-images", help="Images timed one at a time (p50 / p95)."),
    repeats: int = typer.Option(3, "--repeats", help="Timings of the model alone (best of)."),
    timeout: float = typer.Option(3600.0, "--timeout", help="Seconds one format may take before its row fails."),
) -> None:
    """Export a checkpoint to every format this machine runs, predict the same images with each, one table.

    Per format: mIoU against the masks (when --data has them), pixel agreement with PyTorch fp32,
    images/s end to end and for the model alone, batch-1 latency p50/p95, peak memory, file size,
    export time. Each format runs in its own process: a runtime that crashes is a failed row.

    Exit codes: 0 every format measured or unavailable here (with the reason), 2 bad option,
    3 some format failed (its row says how).
    """
    from rich.table import Table

    from seco_deploy.bench.report import COLUMNS, table_rows, to_markdown
    from seco_deploy.bench.runner import Benchmark, BenchmarkRequest
    from seco_deploy.data.io import atomic_write_text
    from seco_deploy.runtime.errors import MissingRuntimeError

    request = BenchmarkRequest(
        checkpoint=model, data=data, formats=formats, images=images, device=device, out=out, cache=cache,
        calib=calib, calib_images=calib_images, threads=threads, batch=batch, workers=workers,
        latency_images=latency_images, repeats=repeats, timeout=timeout,
    )
    try:
        bench = Benchmark(request, progress=_say)
        result = bench.run()
    except (ValueError, FileNotFoundError, MissingRuntimeError) as exc:
        fail(escape(str(exc)), EXIT_USAGE)
    bench.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = bench.out / "benchmark.json", bench.out / "benchmark.md"
    atomic_write_text(json_path, result.to_json())
    atomic_write_text(md_path, to_markdown(result))

    table = Table(title=f"seco benchmark: {result.settings['images']} images, {result.settings['device']}")
    for name in COLUMNS:
        table.add_column(name, justify="left" if name in ("format", "note") else "right", overflow="fold")
    for cells in table_rows(result):
        table.add_row(*(escape(c) for c in cells))
    Console().print(table)
    _say(f"written: {json_path}, {md_path}")
    if result.failed:
        _say("failed: " + "; ".join(f"{r.format}: {r.reason}" for r in result.failed))
        raise typer.Exit(EXIT_PARTIAL)
    raise typer.Exit(EXIT_OK)
