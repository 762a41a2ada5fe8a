"""`seco demo`: synthesise a co-occurrence set, train, export ONNX, predict, evaluate, write a report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from seco_deploy.cli.common import EXIT_ERROR, EXIT_USAGE, console, fail, parse_scales


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Demo folder (data, run, model, predictions, report)."),
    minutes: float = typer.Option(10.0, "--minutes", help="Training time budget in minutes (train.max_minutes)."),
    images: int = typer.Option(800, "--images", help="Synthetic images (20% validation)."),
    size: int = typer.Option(224, "--size", help="Synthetic image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data and of training."),
    difficulty: str = typer.Option(
        "partial", "--difficulty", help="Synthetic profile: partial (default: objects a 10-minute run learns, each "
        "context alone in ~4% of images) | hard (small objects, contexts never alone: the trap) | cooccur | easy "
        "(docs/benchmarks.md)."),
    preset: str = typer.Option("cpu", "--preset", help="Training preset (cpu; test for a smoke run)."),
    set_: list[str] = typer.Option([], "--set", help="Config override section.key=value (repeatable)."),
    sec_per_iter: float | None = typer.Option(
        None, "--sec-per-iter", help="Expected seconds per iteration, to fit the schedule to --minutes "
        "(default: measured before training; the time limit itself is exact)."),
    iters: int | None = typer.Option(
        None, "--iters", help="Train exactly this many iterations (schedule scaled to them); --minutes stays a cap."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Skip training: use this checkpoint."),
    examples: int = typer.Option(6, "--examples", help="Validation images in the report's grid."),
    benchmark: Path | None = typer.Option(
        None, "--benchmark", help="Folder written by benchmarks/cooccurrence.py: add baseline vs SeCo."),
    cam_scales: str = typer.Option(
        "1.0,1.5", "--cam-scales", help="Scales of the CAM pseudo-labels (seco predict --scales); 1.0 alone is the "
        "training CAMs' grid."),
) -> None:
    """Synthesise data, train, export to ONNX, predict with ONNX Runtime, evaluate; write OUT/report.html."""
    from seco_deploy.config import ConfigError
    from seco_deploy.data.synth import PROFILES
    from seco_deploy.demo.pipeline import DemoOptions, run_demo

    if minutes <= 0:
        fail("--minutes must be positive")
    if images < 10:
        fail("--images must be at least 10 (the set is split 80/20 into train and val)")
    if difficulty not in PROFILES:
        fail(f"--difficulty {difficulty!r}; choose one of {', '.join(PROFILES)}")
    scales = parse_scales(cam_scales, "--cam-scales")
    if iters is not None and iters < 1:
        fail("--iters must be at least 1")
    if checkpoint is not None and not checkpoint.is_file():
        fail(f"--checkpoint {checkpoint} does not exist")
    if benchmark is not None and not (benchmark / "cooccurrence.json").is_file():
        fail(f"--benchmark {benchmark} holds no cooccurrence.json; run benchmarks/cooccurrence.py --out {benchmark}")
    options = DemoOptions(out=out, minutes=minutes, images=images, size=size, seed=seed, difficulty=difficulty,
                          preset=preset, overrides=tuple(set_), sec_per_iter=sec_per_iter, iters=iters,
                          checkpoint=checkpoint,
                          examples=examples, benchmark=benchmark, cam_scales=scales or (1.0,))
    try:
        result = run_demo(options, console)
    except ConfigError as exc:
        fail(escape(str(exc)), EXIT_USAGE)
    except (OSError, RuntimeError, ValueError) as exc:
        fail(escape(f"{type(exc).__name__}: {exc}"), EXIT_ERROR)
    console.print(escape(result.figures["headline"]), highlight=False)
    typer.echo(f"report: {result.report}")
