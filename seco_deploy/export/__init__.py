"""Export a checkpoint to ONNX or a TensorRT engine, and prove the result matches PyTorch.

``export_checkpoint(ExportRequest(...)) -> ExportOutcome`` is what ``seco export`` calls:

- ``format="onnx"``: :func:`seco_deploy.export.onnx_export.export_onnx` writes one
  self-contained ``.onnx`` with the metadata embedded; the parity check runs it in ONNX Runtime
  (``device``: cpu, cuda, tensorrt) against the PyTorch network on the CPU.
- ``format="trt"``: the same ONNX export (fp16 graph under ``--fp16`` when TensorRT builds
  strongly typed networks), then :func:`seco_deploy.export.tensorrt.build_engine` with one
  optimisation profile (default: the TTA sizes of the checkpoint's ``infer`` scales from batch 1
  to ``max_batch``), written with the metadata header; parity on the GPU against PyTorch there.
- ``check_only``: export nothing; check the existing ``out`` against the checkpoint.

Parity (:mod:`seco_deploy.export.parity`) does not raise: ``outcome.parity.passed`` is False
when the model is beyond tolerance (the CLI exits 4). Missing TensorRT/CUDA/onnxruntime-gpu
raises :class:`~seco_deploy.export.tensorrt.MissingRuntimeError` (exit 5); bad options raise
``ValueError`` (exit 2); an exporter or builder failure raises ``ExportError`` /
``EngineBuildError`` (exit 1).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ExportOutcome", "ExportRequest", "export_checkpoint", "model_kind"]


@dataclass
class ExportRequest:
    """Options of ``seco export`` (see the CLI help for each)."""

    checkpoint: Path
    out: Path
    format: str = "onnx"  # onnx | trt
    heads: tuple[str, ...] = ("seg",)
    dynamic: bool = True
    size: int | None = None  # default: the training crop size
    batch: int | None = None  # static exports only
    opset: int = 18
    fp16: bool = False
    simplify: bool = False
    check: bool = True
    check_only: bool = False
    device: str | None = None  # parity device: cpu for ONNX, cuda for TensorRT by default
    min_shape: str | None = None
    opt_shape: str | None = None
    max_shape: str | None = None
    max_batch: int | None = None  # TensorRT profile's max batch; default 2 x infer.batch (image + flip)
    workspace_gb: float = 4.0
    timing_cache: Path | None = None
    onnx_path: Path | None = None  # TensorRT: where to keep the intermediate ONNX (default: temporary)
    seed: int = 0


@dataclass
class ExportOutcome:
    path: Path
    metadata: Any
    parity: Any = None  # ParityReport or None when --no-check
    export_report: Any = None
    engine_details: dict[str, Any] = field(default_factory=dict)


def model_kind(path: str | Path) -> str:
    """``pt``, ``onnx`` or ``engine`` from the suffix; ValueError for anything else."""
    suffix = Path(path).suffix.lower()
    kinds = {".pt": "pt", ".pth": "pt", ".onnx": "onnx", ".engine": "engine", ".plan": "engine", ".trt": "engine"}
    if suffix not in kinds:
        raise ValueError(f"{path}: unknown model type {suffix!r}; expected .pt, .onnx, .engine, .plan or .trt")
    return kinds[suffix]


def checkpoint_iteration(path: str | Path) -> int:
    """The ``iteration`` entry of a checkpoint (-1 when absent), read memory-mapped: no tensor is loaded."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(ckpt.get("iteration", -1)) if isinstance(ckpt, dict) else -1


def _log(progress: Callable[[str], None] | None, text: str) -> None:
    if progress is not None:
        progress(text)


def export_checkpoint(request: ExportRequest, progress: Callable[[str], None] | None = None) -> ExportOutcome:
    """Export (or with ``check_only`` just check) ``request.checkpoint``; see the module docstring."""
    from seco_deploy.train.checkpoint import load_for_inference

    req = request
    if req.format not in ("onnx", "trt"):
        raise ValueError(f"--format {req.format!r}; choose onnx or trt")
    if req.check_only:
        if not req.out.is_file():
            raise ValueError(f"--check-only: {req.out} does not exist; export it first")
        if model_kind(req.out) == "pt":
            raise ValueError(f"--check-only: {req.out} is a checkpoint; give the exported .onnx or .engine")
        engine = model_kind(req.out) == "engine"
    else:
        expected_suffix = (".onnx",) if req.format == "onnx" else (".engine", ".plan", ".trt")
        if req.out.suffix.lower() not in expected_suffix:
            raise ValueError(f"--out {req.out} must end in {' or '.join(expected_suffix)} for --format {req.format}")
        engine = req.format == "trt"
    if engine:
        from seco_deploy.export.tensorrt import require_gpu_runtime

        require_gpu_runtime(req.device or "cuda")

    _log(progress, f"loading {req.checkpoint}")
    net, cfg, classes = load_for_inference(req.checkpoint, device="cpu")
    iteration = checkpoint_iteration(req.checkpoint)
    patch = int(net.encoder.patch_size)
    if req.check_only:
        return _check_existing(req, net, cfg, progress)
    if req.format == "onnx":
        return _export_onnx(req, net, cfg, classes, patch, iteration, progress)
    return _export_trt(req, net, cfg, classes, patch, iteration, progress)


def _onnx_options(req: ExportRequest, cfg: Any, fp16_graph: bool) -> Any:
    from seco_deploy.export.onnx_export import OnnxExportOptions

    return OnnxExportOptions(
        heads=tuple(req.heads),
        size=req.size or cfg.data.crop_size,
        dynamic=req.dynamic,
        batch=req.batch,
        fp16=fp16_graph,
        opset=req.opset,
        simplify=req.simplify,
    )


def _write_onnx(req, net, cfg, classes, patch, iteration, path: Path, fp16_graph: bool, progress) -> tuple[Any, Any]:
    from seco_deploy.export.metadata import metadata_from_checkpoint
    from seco_deploy.export.onnx_export import check_options, export_input_shape, export_onnx

    options = _onnx_options(req, cfg, fp16_graph)
    check_options(options, patch)
    meta = metadata_from_checkpoint(
        req.checkpoint, cfg, classes, patch, options.heads, export_input_shape(options),
        precision="fp16" if req.fp16 else "fp32", opset=options.opset, iteration=iteration,
    )
    shape = "dynamic N x 3 x H x W" if options.dynamic else f"static {export_input_shape(options)}"
    _log(progress, f"exporting ONNX ({shape}, heads {','.join(options.heads)}, opset {options.opset}"
         f"{', fp16' if fp16_graph else ''}{', simplify' if options.simplify else ''}) to {path}")
    report = export_onnx(net, path, meta, options, patch)
    return report, meta


def _export_onnx(req, net, cfg, classes, patch, iteration, progress) -> ExportOutcome:
    report, _ = _write_onnx(req, net, cfg, classes, patch, iteration, req.out, req.fp16, progress)
    _log(progress, f"wrote {report.path} ({report.bytes / 2**20:.1f} MiB, {report.nodes} nodes)")
    from seco_deploy.export.metadata import read_onnx_metadata

    meta = read_onnx_metadata(req.out)
    outcome = ExportOutcome(path=req.out, metadata=meta, export_report=report)
    if req.check:
        outcome.parity = _onnx_parity(req.out, net, cfg, meta, req.device or "cpu", req.seed, progress)
    return outcome


def _onnx_parity(path: Path, net, cfg, meta, device: str, seed: int, progress) -> Any:
    from seco_deploy.export.parity import check_parity, parity_shapes, tolerance_for, torch_runner
    from seco_deploy.infer.onnx_backend import OnnxRunner

    runner = OnnxRunner(path, device=device)
    shapes = parity_shapes(meta.input_shape, meta.crop_size, meta.patch_size)
    _log(progress, f"parity check: ONNX Runtime ({', '.join(runner.providers)}) vs PyTorch at "
         + ", ".join("x".join(map(str, s)) for s in shapes))
    reference = torch_runner(net.cpu(), with_cam="cam" in meta.heads, device="cpu")
    return check_parity(reference, runner.run, shapes, tolerance_for(meta.precision), seed=seed)


def _export_trt(req, net, cfg, classes, patch, iteration, progress) -> ExportOutcome:
    import dataclasses

    from seco_deploy.export.metadata import read_onnx_metadata
    from seco_deploy.export.tensorrt import (
        EngineBuildOptions,
        build_engine,
        fp16_needs_fp16_onnx,
        require_tensorrt,
        resolve_profile,
        tta_profile,
        write_engine_file,
    )

    trt = require_tensorrt()
    fp16_graph = req.fp16 and fp16_needs_fp16_onnx(trt)
    with tempfile.TemporaryDirectory(prefix="seco-export-") as tmp:
        onnx_path = req.onnx_path or Path(tmp) / "model.onnx"
        report, _ = _write_onnx(req, net, cfg, classes, patch, iteration, onnx_path, fp16_graph, progress)
        meta = read_onnx_metadata(onnx_path)
        scales = sorted(set(cfg.infer.mask_scales) | set(cfg.infer.cam_scales))
        max_batch = req.max_batch or 2 * cfg.infer.batch
        default = tta_profile(meta.crop_size, scales, patch, max_batch, min_aspect=0.5)
        profile = resolve_profile(default, patch, req.min_shape, req.opt_shape, req.max_shape, meta.input_shape)
        _log(progress, f"building TensorRT engine ({'fp16, LayerNorm fp32' if req.fp16 else 'fp32'}; profile "
             f"min {profile.min} opt {profile.opt} max {profile.max}; workspace {req.workspace_gb:g} GiB)")
        plan, details = build_engine(
            onnx_path,
            EngineBuildOptions(profile, fp16=req.fp16, workspace_gb=req.workspace_gb, timing_cache=req.timing_cache),
        )
    meta = dataclasses.replace(meta, precision="fp16" if req.fp16 else "fp32", extra={**meta.extra, **details})
    write_engine_file(req.out, plan, meta.to_props())
    _log(progress, f"wrote {req.out} ({len(plan) / 2**20:.1f} MiB)")
    outcome = ExportOutcome(path=req.out, metadata=meta, export_report=report, engine_details=details)
    if req.check:
        outcome.parity = _engine_parity(req.out, net, meta, req.device or "cuda", req.seed, progress)
    return outcome


def _engine_parity(path: Path, net, meta, device: str, seed: int, progress) -> Any:
    from seco_deploy.export.parity import check_parity, engine_parity_shapes, tolerance_for, torch_runner
    from seco_deploy.infer.trt_backend import TensorRTRunner

    runner = TensorRTRunner(path, device=device)
    shapes = engine_parity_shapes(runner.profile)
    _log(progress, "parity check: TensorRT vs PyTorch on " + str(runner.device) + " at "
         + ", ".join("x".join(map(str, s)) for s in shapes))
    gpu_net = net.to(runner.device)
    reference = torch_runner(gpu_net, with_cam="cam" in meta.heads, device=runner.device)
    report = check_parity(reference, runner.run, shapes, tolerance_for(meta.precision), seed=seed)
    net.cpu()
    return report


def _check_existing(req: ExportRequest, net, cfg, progress) -> ExportOutcome:
    from seco_deploy.export.metadata import ExportMetadata, file_sha256, read_onnx_metadata
    from seco_deploy.export.tensorrt import read_engine_file

    if model_kind(req.out) == "onnx":
        meta = read_onnx_metadata(req.out)
    else:
        meta = ExportMetadata.from_props(read_engine_file(req.out)[0], source=str(req.out))
    digest = file_sha256(req.checkpoint)
    if meta.checkpoint_sha256 and meta.checkpoint_sha256 != digest:
        _log(progress, f"warning: {req.out} was exported from another checkpoint "
             f"(sha256 {meta.checkpoint_sha256[:12]}..., this one {digest[:12]}...)")
    outcome = ExportOutcome(path=req.out, metadata=meta)
    if model_kind(req.out) == "onnx":
        outcome.parity = _onnx_parity(req.out, net, cfg, meta, req.device or "cpu", req.seed, progress)
    else:
        outcome.parity = _engine_parity(req.out, net, meta, req.device or "cuda", req.seed, progress)
    return outcome
