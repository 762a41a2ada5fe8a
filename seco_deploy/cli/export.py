"""`seco export`: checkpoint -> ONNX or TensorRT engine, with a parity check against PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from seco_deploy.cli.common import (
    EXIT_ERROR,
    EXIT_MISSING_RUNTIME,
    EXIT_PARITY,
    EXIT_USAGE,
    console,
    fail,
)


def _progress(text: str) -> None:
    console.print(escape(text), highlight=False, soft_wrap=True)


def export(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt) to export."),
    format: str = typer.Option("onnx", "--format", help="onnx | trt"),
    out: Path | None = typer.Option(
        None, "--out", help="Output file (default: CHECKPOINT with .onnx, or .engine for trt)."
    ),
    heads: str = typer.Option("seg", "--heads", help="seg (masks) or seg,cam (also CAMs for pseudo-labels)."),
    dynamic: bool = typer.Option(
        True, "--dynamic/--static",
        help="Dynamic batch, height and width (sides multiples of the patch size), or H and W fixed to --size.",
    ),
    size: int | None = typer.Option(None, "--size", help="Export / static input side (default: training crop)."),
    batch: int | None = typer.Option(None, "--batch", help="--static only: fix the batch too (default: dynamic)."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (>= 18)."),
    fp16: bool = typer.Option(False, "--fp16", help="Half precision (LayerNorm kept in fp32)."),
    simplify: bool = typer.Option(False, "--simplify", help="Extra constant folding and shape inference."),
    target: str = typer.Option(
        "onnxruntime", "--target",
        help="onnx: onnxruntime (dynamo exporter) or opencv (TorchScript exporter; OpenCV DNN reads it, ORT too).",
    ),
    int8: bool = typer.Option(
        False, "--int8", help="onnx: static int8 (QDQ), calibrated on --calib images; LayerNorm/Softmax stay float."
    ),
    calib: Path | None = typer.Option(
        None, "--calib", help="--int8: folder of images or VOC-layout set to calibrate on (and check parity with)."
    ),
    calib_images: int = typer.Option(32, "--calib-images", help="--int8: how many images calibrate."),
    calib_method: str = typer.Option("minmax", "--calib-method", help="--int8: minmax | percentile | entropy."),
    per_channel: bool = typer.Option(
        True, "--per-channel/--per-tensor", help="--int8: one weight scale per output channel or per tensor."
    ),
    reduce_range: bool = typer.Option(
        False, "--reduce-range", help="--int8: 7-bit weights (avoids int16 saturation on CPUs without VNNI)."
    ),
    check: bool = typer.Option(True, "--check/--no-check", help="Parity check against PyTorch (exit 4 on failure)."),
    check_only: bool = typer.Option(
        False, "--check-only", help="Export nothing: check the existing --out file against the checkpoint."
    ),
    device: str | None = typer.Option(
        None, "--device", help="Parity device: cpu|cuda|tensorrt for ONNX Runtime (default cpu); cuda[:N] for trt."
    ),
    min_shape: str | None = typer.Option(None, "--min", help="trt: profile min shape NxCxHxW (default: TTA sizes)."),
    opt_shape: str | None = typer.Option(None, "--opt", help="trt: profile opt shape NxCxHxW."),
    max_shape: str | None = typer.Option(None, "--max", help="trt: profile max shape NxCxHxW."),
    max_batch: int | None = typer.Option(
        None, "--max-batch", help="trt: profile max batch (default 2 x infer.batch: image + flip)."
    ),
    workspace: float = typer.Option(4.0, "--workspace", help="trt: builder workspace in GiB."),
    timing_cache: Path | None = typer.Option(
        None, "--timing-cache", help="trt: timing cache file, read if present and updated (faster rebuilds)."
    ),
    onnx_out: Path | None = typer.Option(None, "--onnx", help="trt: keep the intermediate ONNX file here."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the export and parity figures as JSON here."),
) -> None:
    """Export the segmentation branch (and optionally the CAM branch) to ONNX or TensorRT.

    With --int8 the parity check judges the argmax masks on real --calib images (pixel agreement with
    fp32, and the mIoU drop when the set has masks), not the logits.

    Exit codes: 0 ok, 2 bad option or file, 4 parity check failed, 5 TensorRT/CUDA missing.
    """
    from seco_deploy.export.exporter import ExportRequest, export_checkpoint
    from seco_deploy.export.tensorrt.build import EngineBuildError
    from seco_deploy.runtime.card import CardError
    from seco_deploy.runtime.errors import MissingRuntimeError

    fmt = format.strip().lower()
    if fmt in ("tensorrt", "engine"):
        fmt = "trt"
    if fmt not in ("onnx", "trt"):
        fail(escape(f"--format {format!r}; choose onnx or trt"))
    if not checkpoint.is_file():
        fail(escape(f"checkpoint {checkpoint} does not exist"))
    head_list = tuple(h.strip() for h in heads.split(",") if h.strip())
    if head_list not in (("seg",), ("seg", "cam"), ("cam", "seg")):
        fail(escape(f"--heads {heads!r}; use seg or seg,cam"))
    head_list = ("seg", "cam") if "cam" in head_list else ("seg",)
    if int8 and fmt != "onnx":
        fail("--int8 applies to --format onnx")
    if out is None:
        out = checkpoint.with_suffix((".int8.onnx" if int8 else ".onnx") if fmt == "onnx" else ".engine")
    request = ExportRequest(
        checkpoint=checkpoint, out=out, format=fmt, heads=head_list, dynamic=dynamic, size=size, batch=batch,
        opset=opset, fp16=fp16, simplify=simplify, check=check, check_only=check_only, device=device,
        min_shape=min_shape, opt_shape=opt_shape, max_shape=max_shape, max_batch=max_batch, workspace_gb=workspace,
        timing_cache=timing_cache, onnx_path=onnx_out, int8=int8, calib=calib, calib_images=calib_images,
        target=target.strip().lower(), calib_method=calib_method.strip().lower(), per_channel=per_channel,
        reduce_range=reduce_range,
    )
    try:
        outcome = export_checkpoint(request, progress=_progress)
    except MissingRuntimeError as exc:
        fail(escape(str(exc)), EXIT_MISSING_RUNTIME)
    except (ValueError, FileNotFoundError, CardError) as exc:
        fail(escape(str(exc)), EXIT_USAGE)
    except (EngineBuildError, RuntimeError) as exc:  # also ExportError, OpenCVProbeError, the exporter's own
        fail(escape(str(exc)), EXIT_ERROR)

    if json_out is not None:
        from seco_deploy.data.io import atomic_write_text

        figures = {
            "path": str(outcome.path),
            "format": fmt,
            "input_shape": outcome.card.input_shape,
            "precision": outcome.card.precision,
            "heads": outcome.card.heads,
            "engine": outcome.engine_details,
            "parity": outcome.parity.as_dict() if outcome.parity is not None else None,
        }
        atomic_write_text(json_out, json.dumps(figures, indent=2) + "\n")
    if outcome.parity is None:
        typer.echo(f"{outcome.path}: written (parity check skipped)")
        return
    for line in outcome.parity.lines():
        typer.echo(line)
    if not outcome.parity.passed:
        fail(
            escape(f"parity check failed for {outcome.path}: max |diff| {outcome.parity.max_abs_diff:.3e}, "
            f"argmax agreement {outcome.parity.min_agreement:.4%}"
            + (f", mIoU drop {outcome.parity.miou_drop:+.2f}" if outcome.parity.miou_drop is not None else "")
            + f" ({outcome.parity.tolerance.describe()}); "
            "the file does not compute what the checkpoint computes, do not deploy it"),
            EXIT_PARITY,
        )
    typer.echo(
        f"{outcome.path}: parity ok (max |diff| {outcome.parity.max_abs_diff:.2e}, "
        f"argmax agreement {outcome.parity.min_agreement:.4%})"
    )
