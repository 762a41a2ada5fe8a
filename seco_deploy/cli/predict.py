"""`seco predict`: masks or pseudo-labels for a folder, glob, list or single image."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from seco_deploy.cli.common import EXIT_MISSING_RUNTIME, EXIT_USAGE, console, fail, parse_scales

if TYPE_CHECKING:
    from seco_deploy.infer.manifest import RunSummary
    from seco_deploy.infer.predictor import Predictor
    from seco_deploy.infer.sources import InputItem


def _rank_device(device: str) -> str:
    """``auto`` as this rank's device (``cuda:LOCAL_RANK`` under torchrun on a GPU machine), so every
    backend, ONNX Runtime's included, runs on its rank's GPU; other strings pass unchanged."""
    from seco_deploy.runtime.device import resolve_device

    return str(resolve_device("auto")) if device == "auto" else device


def predict(
    source: str = typer.Argument(..., help="Folder, glob, single image, or .txt list of paths."),
    model: Path = typer.Option(..., "--model", help="Checkpoint (.pt), model.onnx or model.engine."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    mode: str = typer.Option("mask", "--mode", help="mask (decoder masks) | pseudo (CAM pseudo-labels)"),
    tags: Path | None = typer.Option(None, "--tags", help="tags.csv with image-level tags (pseudo mode)."),
    scales: str | None = typer.Option(None, "--scales", help="Comma-separated TTA scales (default: the model's)."),
    flip: bool = typer.Option(True, "--flip/--no-flip", help="Horizontal-flip TTA."),
    size: int | None = typer.Option(None, "--size", help="TTA base size in px (default: the training crop size)."),
    resize: str = typer.Option("square", "--resize", help="square (as in training) | keep (aspect ratio)"),
    crf: bool = typer.Option(False, "--crf", help="Dense-CRF refinement of masks (mask mode)."),
    refine: str = typer.Option("none", "--refine", help="Pseudo-label refinement: none | par | crf"),
    cls_threshold: float | None = typer.Option(
        None, "--cls-threshold", help="Pseudo mode without --tags: classes whose image logit exceeds this."
    ),
    bkg_thre: float | None = typer.Option(None, "--bkg-thre", help="Pseudo mode: background threshold on CAMs."),
    overlay: bool = typer.Option(False, "--overlay", help="Write overlays/NAME.jpg."),
    save_probs: bool = typer.Option(False, "--save-probs", help="Write probs/NAME.npz (float16)."),
    probs_scale: float = typer.Option(0.25, "--probs-scale", help="Downscale factor of saved probabilities."),
    save_cam: bool = typer.Option(False, "--save-cam", help="Write cams/NAME.jpg CAM heatmaps."),
    batch: int | None = typer.Option(None, "--batch", help="Images per forward pass (default: the model's)."),
    workers: int | None = typer.Option(None, "--workers", help="Decoding processes (0: decode in this process)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    amp: str = typer.Option("off", "--amp", help="off | bf16 | fp16 (autocast; PyTorch checkpoints)"),
    threads: int | None = typer.Option(
        None, "--threads", help="Intra-op CPU threads of the model (PyTorch or ONNX Runtime; default: every CPU)."
    ),
    shard: str | None = typer.Option(None, "--shard", help="i/n: take the i-th (from 0) of n slices of the inputs."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Include subfolders of a folder SOURCE."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo images whose outputs exist."),
    fsync: bool = typer.Option(
        False, "--fsync", help="Flush every output to disk before it counts as written (survives a power loss; slower)."
    ),
    max_pixels: int | None = typer.Option(None, "--max-pixels", help="Refuse images with more pixels than this."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Write masks or pseudo-labels for images (exit 0: all written, 3: some inputs failed)."""
    import torch

    from seco_deploy.data.datasets import DatasetError
    from seco_deploy.data.io import DEFAULT_MAX_PIXELS
    from seco_deploy.infer.manifest import RunMismatchError
    from seco_deploy.infer.options import PredictOptions, default_threads, default_workers
    from seco_deploy.infer.predictor import Predictor
    from seco_deploy.infer.sources import SourceError, expand_source, parse_shard, select_shard, shard_from_env
    from seco_deploy.infer.tags import TagTable
    from seco_deploy.runtime.backends import open_backend
    from seco_deploy.runtime.errors import MissingRuntimeError

    torch.set_flush_denormal(True)
    if threads is not None and threads < 1:
        fail("--threads must be >= 1")
    threads = threads if threads is not None else default_threads()
    torch.set_num_threads(threads)
    parsed_scales = parse_scales(scales)
    if mode not in ("mask", "pseudo"):
        fail(f"--mode {mode!r}: choose mask or pseudo")
    if tags is not None and not tags.is_file():
        fail(f"--tags {tags} does not exist")
    try:
        shard_spec = parse_shard(shard) if shard is not None else shard_from_env()
        items = expand_source(source, recursive=recursive, exclude=[out])
    except SourceError as exc:
        fail(str(exc))
    total = len(items)
    if shard_spec is not None:
        items = select_shard(items, *shard_spec)
    try:
        backend, info = open_backend(model, device=_rank_device(device), amp=amp, threads=threads)
    except MissingRuntimeError as exc:
        fail(str(exc), EXIT_MISSING_RUNTIME)
    except ValueError as exc:
        fail(str(exc))
    try:
        tag_table = TagTable(tags, info.classes) if tags is not None else None
    except DatasetError as exc:
        fail(f"{exc} (the model knows: {', '.join(info.classes[1:])})")
    default_batch = info.config.infer.batch if info.config is not None else 4
    options = PredictOptions(
        mode=mode, scales=parsed_scales, flip=flip, base_size=size, resize=resize, crf=crf, refine=refine,
        tags=tag_table, cls_threshold=cls_threshold, bkg_thre=bkg_thre, overlay=overlay, save_probs=save_probs,
        probs_scale=probs_scale, save_cam=save_cam, batch=batch if batch is not None else default_batch,
        workers=workers if workers is not None else default_workers(), overwrite=overwrite, fsync=fsync,
        max_pixels=max_pixels if max_pixels is not None else DEFAULT_MAX_PIXELS,
    )
    try:
        predictor = Predictor(backend, info, options)
    except ValueError as exc:
        fail(str(exc))
    manifest = out / "manifest.jsonl"
    where = ""
    if shard_spec is not None:
        manifest = out / f"manifest.shard-{shard_spec[0]}-of-{shard_spec[1]}.jsonl"
        where = f" (shard {shard_spec[0]}/{shard_spec[1]}: {len(items)} of {total})"
    console.print(
        f"predict: {len(items)} image(s){where}, mode {mode}, scales {','.join(map(str, predictor.scales))}, "
        f"flip {'on' if flip else 'off'}, device {backend.device}, batch {options.batch} -> {out}",
        highlight=False,
        soft_wrap=True,
    )
    try:
        predictor.prepare_output(out)
        summary = _run(predictor, items, out, manifest, quiet)
    except (RunMismatchError, ValueError) as exc:  # settings that clash with OUT, options found wrong at run time
        fail(str(exc), EXIT_USAGE)
    finally:
        backend.close()
    rate = summary.ok / summary.seconds if summary.seconds > 0 else 0.0
    console.print(
        f"done: {summary.ok} written, {summary.skipped} skipped (complete), {summary.failed} failed "
        f"in {summary.seconds:.1f} s ({rate:.2f} images/s); manifest: {manifest}",
        highlight=False,
        soft_wrap=True,
    )
    for path, reason in summary.failures[:10]:
        console.print(f"  failed: {path}: {reason}", highlight=False, markup=False, soft_wrap=True)
    if summary.failed > 10:
        console.print(f"  ... and {summary.failed - 10} more (see the manifest)", highlight=False)
    raise typer.Exit(summary.exit_code)


def _run(predictor: Predictor, items: list[InputItem], out: Path, manifest: Path, quiet: bool) -> RunSummary:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), console=console, disable=quiet, transient=False,
    ) as progress:
        task = progress.add_task("predict", total=len(items))
        return predictor.run(items, out, manifest, on_record=lambda _r: progress.advance(task))
