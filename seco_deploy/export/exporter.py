"""The exporter: a checkpoint to an ONNX file or a TensorRT engine, then proof that it computes
what the checkpoint computes.

``Exporter(ExportRequest(...), progress).run() -> ExportOutcome`` is what ``seco export`` calls
(:func:`export_checkpoint` is the same as a function). Its stages, in order:

1. :meth:`Exporter.load`: the checkpoint's network (CPU, eval mode), config, classes, iteration;
2. :meth:`Exporter.write_onnx`: :func:`seco_deploy.export.onnx_export.export_onnx` writes one
   self-contained ``.onnx`` with the model card embedded;
3. for ``format="trt"``, :meth:`Exporter.build_engine`: the same ONNX export (an fp16 graph under
   ``--fp16`` when TensorRT builds strongly typed networks), then
   :func:`seco_deploy.export.tensorrt.build.build_engine` with one optimisation profile (default:
   the TTA sizes of the checkpoint's scales from batch 1 to ``max_batch``), written with the card
   header (:mod:`seco_deploy.runtime.engine_file`);
4. :meth:`Exporter.check`: the parity check (:mod:`seco_deploy.export.parity`): ONNX Runtime
   (``device`` cpu, cuda or tensorrt) or the engine on the GPU against the PyTorch network.

``check_only`` skips 2-3 and checks the existing ``out``. Parity does not raise:
``outcome.parity.passed`` is False beyond tolerance (the CLI exits 4). A missing runtime raises
:class:`~seco_deploy.runtime.errors.MissingRuntimeError` (exit 5); bad options raise
``ValueError`` (exit 2); an exporter or builder failure raises ``ExportError`` /
``EngineBuildError`` (exit 1).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seco_deploy.runtime.model_file import model_kind, suffixes_of

__all__ = ["ExportOutcome", "ExportRequest", "Exporter", "export_checkpoint"]

FORMATS = {"onnx": "onnx", "trt": "engine"}  # --format -> the model-file kind it writes


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
    int8: bool = False  # ONNX only: static QDQ int8 (seco_deploy.export.quantize), calibrated on ``calib``
    calib: Path | None = None  # folder of images (or VOC-layout set) for calibration and the int8 parity check
    calib_images: int = 32
    calib_method: str = "minmax"  # minmax | percentile | entropy
    per_channel: bool = True
    reduce_range: bool = False
    target: str = "onnxruntime"  # onnx: onnxruntime (dynamo exporter) | opencv (TorchScript exporter, cv2.dnn reads it)
    parity_images: int = 16  # int8: real images for the parity check, held out from calibration when possible


@dataclass
class ExportOutcome:
    """The file written (or checked), its model card, the parity report (None with ``--no-check``)."""

    path: Path
    card: Any
    parity: Any = None
    export_report: Any = None
    engine_details: dict[str, Any] = field(default_factory=dict)


class Exporter:
    """One export; see the module docstring. Build it (options are checked), then :meth:`run`."""

    def __init__(self, request: ExportRequest, progress: Callable[[str], None] | None = None) -> None:
        req = request
        if req.format not in FORMATS:
            raise ValueError(f"--format {req.format!r}; choose onnx or trt")
        if req.check_only:
            if not req.out.is_file():
                raise ValueError(f"--check-only: {req.out} does not exist; export it first")
            self.kind = model_kind(req.out)
            if self.kind == "checkpoint":
                raise ValueError(f"--check-only: {req.out} is a checkpoint; give the exported .onnx or .engine")
        else:
            self.kind = FORMATS[req.format]
            expected = suffixes_of(self.kind)
            if req.out.suffix.lower() not in expected:
                raise ValueError(f"--out {req.out} must end in {' or '.join(expected)} for --format {req.format}")
        if req.target != "onnxruntime" and (req.format != "onnx" or req.int8):
            raise ValueError(f"--target {req.target} applies to --format onnx without --int8")
        if req.int8 and not req.check_only:
            if req.format != "onnx" or req.fp16:
                raise ValueError("--int8 applies to --format onnx without --fp16")
            if req.calib is None:
                raise ValueError("--int8 needs calibration images: give --calib DIR (a folder of images or a "
                                 "VOC-layout dataset, e.g. the training data)")
        self.request = req
        self.progress = progress
        self.calib_files: list[Path] = []
        self.net: Any = None
        self.cfg: Any = None
        self.classes: list[str] = []
        self.iteration = -1

    def say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)

    # ------------------------------------------------------------------ stages
    def run(self) -> ExportOutcome:
        """Load, export (ONNX, or ONNX then engine), check; or with ``check_only`` just check."""
        req = self.request
        if self.kind == "engine":
            from seco_deploy.runtime.device import require_gpu_runtime

            require_gpu_runtime(req.device or "cuda")
        self.load()
        if req.check_only:
            return self.check_existing()
        outcome = self.write_onnx_file() if self.kind == "onnx" else self.build_engine()
        if req.check:
            outcome.parity = self.check(outcome.path, outcome.card)
        return outcome

    def load(self) -> None:
        """The checkpoint's network on the CPU in eval mode, its config, classes and iteration."""
        from seco_deploy.runtime.checkpoint import checkpoint_iteration, load_for_inference

        self.say(f"loading {self.request.checkpoint}")
        self.net, self.cfg, self.classes = load_for_inference(self.request.checkpoint, device="cpu")
        self.iteration = checkpoint_iteration(self.request.checkpoint)

    @property
    def patch_size(self) -> int:
        return int(self.net.encoder.patch_size)

    def write_onnx(self, path: Path, fp16_graph: bool) -> Any:
        """Export the network to ``path`` (fp16 graph or not); returns the export report."""
        from seco_deploy.export.onnx_export import OnnxExportOptions, check_options, export_input_shape, export_onnx
        from seco_deploy.runtime.card import card_from_checkpoint

        req = self.request
        options = OnnxExportOptions(heads=tuple(req.heads), size=req.size or self.cfg.data.crop_size,
                                    dynamic=req.dynamic, batch=req.batch, fp16=fp16_graph, opset=req.opset,
                                    simplify=req.simplify, target=req.target)
        check_options(options, self.patch_size)
        card = card_from_checkpoint(
            req.checkpoint, self.cfg, self.classes, self.patch_size, options.heads, export_input_shape(options),
            precision="fp16" if req.fp16 else "fp32", opset=options.opset, iteration=self.iteration,
        )
        shape = "dynamic N x 3 x H x W" if options.dynamic else f"static {export_input_shape(options)}"
        self.say(f"exporting ONNX ({shape}, heads {','.join(options.heads)}, opset {options.opset}"
                 f"{', fp16' if fp16_graph else ''}{', simplify' if options.simplify else ''}) to {path}")
        return export_onnx(self.net, path, card, options, self.patch_size)

    def write_onnx_file(self) -> ExportOutcome:
        from seco_deploy.runtime.card import read_onnx_card

        req = self.request
        if req.int8:
            return self.write_int8_file()
        report = self.write_onnx(req.out, req.fp16)
        self.say(f"wrote {report.path} ({report.bytes / 2**20:.1f} MiB, {report.nodes} nodes)")
        return ExportOutcome(path=req.out, card=read_onnx_card(req.out), export_report=report)

    def write_int8_file(self) -> ExportOutcome:
        """The fp32 export (temporary), then static QDQ int8 calibrated on ``--calib`` images."""
        from seco_deploy.export.images import calibration_set, image_files
        from seco_deploy.export.quantize import Int8Options, quantize_onnx
        from seco_deploy.runtime.card import read_onnx_card

        req = self.request
        assert req.calib is not None
        options = Int8Options(method=req.calib_method, images=req.calib_images, per_channel=req.per_channel,
                              reduce_range=req.reduce_range)
        options.validate()
        files = image_files(req.calib)
        with tempfile.TemporaryDirectory(prefix="seco-export-") as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            report = self.write_onnx(fp32, False)
            card = read_onnx_card(fp32)
            calib = calibration_set(files, card, req.calib_images)
            quantize_onnx(fp32, req.out, calib, card, options, self.say)
        self.calib_files = calib.files
        return ExportOutcome(path=req.out, card=read_onnx_card(req.out), export_report=report)

    def parity_images(self, card: Any) -> Any:
        """int8: up to ``parity_images`` images of ``--calib`` not used to calibrate (else the calibration ones)."""
        from seco_deploy.export.images import calibration_set, image_files

        req = self.request
        if req.calib is None:
            raise ValueError(f"{req.out} is int8: its parity check runs on real images; give --calib DIR")
        files = image_files(req.calib)
        used = {p.resolve() for p in self.calib_files}
        held_out = [p for p in files if p.resolve() not in used]
        if not held_out:
            self.say("parity: every image of --calib calibrated the model; checking on those (optimistic)")
            held_out = files
        return calibration_set(held_out, card, req.parity_images)

    def build_engine(self) -> ExportOutcome:
        from seco_deploy.export.tensorrt.build import EngineBuildOptions, build_engine, fp16_needs_fp16_onnx
        from seco_deploy.export.tensorrt.profile import resolve_profile, tta_profile
        from seco_deploy.runtime.card import read_onnx_card
        from seco_deploy.runtime.device import require_tensorrt
        from seco_deploy.runtime.engine_file import write_engine_file

        req, cfg = self.request, self.cfg
        fp16_graph = req.fp16 and fp16_needs_fp16_onnx(require_tensorrt())
        with tempfile.TemporaryDirectory(prefix="seco-export-") as tmp:
            onnx_path = req.onnx_path or Path(tmp) / "model.onnx"
            report = self.write_onnx(onnx_path, fp16_graph)
            card = read_onnx_card(onnx_path)
            scales = sorted(set(cfg.infer.mask_scales) | set(cfg.model.cam_scales))
            max_batch = req.max_batch or 2 * cfg.infer.batch
            default = tta_profile(card.crop_size, scales, self.patch_size, max_batch, min_aspect=0.5)
            profile = resolve_profile(default, self.patch_size, req.min_shape, req.opt_shape, req.max_shape,
                                      card.input_shape)
            self.say(f"building TensorRT engine ({'fp16, LayerNorm fp32' if req.fp16 else 'fp32'}; profile "
                     f"min {profile.min} opt {profile.opt} max {profile.max}; workspace {req.workspace_gb:g} GiB)")
            plan, details = build_engine(onnx_path, EngineBuildOptions(
                profile, fp16=req.fp16, workspace_gb=req.workspace_gb, timing_cache=req.timing_cache))
        card = dataclasses.replace(card, precision="fp16" if req.fp16 else "fp32", extra={**card.extra, **details})
        write_engine_file(req.out, plan, card.to_props())
        self.say(f"wrote {req.out} ({len(plan) / 2**20:.1f} MiB)")
        return ExportOutcome(path=req.out, card=card, export_report=report, engine_details=details)

    def check(self, path: Path, card: Any) -> Any:
        """Parity of the file at ``path`` against the PyTorch network (see :mod:`seco_deploy.export.parity`)."""
        from seco_deploy.export.parity import (
            check_parity,
            engine_parity_shapes,
            parity_shapes,
            tolerance_for,
            torch_runner,
        )

        with_cam = "cam" in card.heads
        if model_kind(path) == "onnx":
            from seco_deploy.runtime.onnx_backend import OnnxRunner

            runner = OnnxRunner(path, device=self.request.device or "cpu")
            if card.precision == "int8":
                return self.check_int8(runner, card, with_cam)
            shapes = parity_shapes(card.input_shape, card.crop_size, card.patch_size)
            if card.extra.get("target") == "opencv":
                return self.check_opencv(path, shapes, with_cam)
            self.say(f"parity check: ONNX Runtime ({', '.join(runner.providers)}) vs PyTorch at "
                     + ", ".join("x".join(map(str, s)) for s in shapes))
            reference = torch_runner(self.net.cpu(), with_cam=with_cam, device="cpu")
            return check_parity(reference, runner.run, shapes, tolerance_for(card.precision), seed=self.request.seed)
        from seco_deploy.runtime.trt_backend import TensorRTRunner

        runner = TensorRTRunner(path, device=self.request.device or "cuda")
        shapes = engine_parity_shapes(runner.profile)
        self.say(f"parity check: TensorRT vs PyTorch on {runner.device} at "
                 + ", ".join("x".join(map(str, s)) for s in shapes))
        reference = torch_runner(self.net.to(runner.device), with_cam=with_cam, device=runner.device)
        try:
            return check_parity(reference, runner.run, shapes, tolerance_for(card.precision), seed=self.request.seed)
        finally:
            self.net.cpu()

    def check_opencv(self, path: Path, shapes: list[tuple[int, int, int, int]], with_cam: bool) -> Any:
        """``--target opencv``: OpenCV DNN itself (in a child process, so a crash is an error, not ours)
        against PyTorch, on the images :func:`~.parity.check_parity` draws."""
        import torch

        from seco_deploy.export.opencv_dnn import probe_opencv
        from seco_deploy.export.parity import check_parity, tolerance_for, torch_runner

        seed = self.request.seed
        inputs = [torch.randn(*s, generator=torch.Generator().manual_seed(seed + i)) for i, s in enumerate(shapes)]
        self.say("parity check: OpenCV DNN (child process) vs PyTorch at "
                 + ", ".join("x".join(map(str, s)) for s in shapes))
        outputs = iter(probe_opencv(path, inputs))
        reference = torch_runner(self.net.cpu(), with_cam=with_cam, device="cpu")
        return check_parity(reference, lambda _images: next(outputs), shapes, tolerance_for("fp32"), seed=seed)

    def check_int8(self, runner: Any, card: Any, with_cam: bool) -> Any:
        """int8 parity on real images: argmax pixel agreement and mIoU drop (:func:`~.parity.check_on_images`)."""
        from seco_deploy.export.parity import check_on_images, tolerance_for, torch_runner

        images = self.parity_images(card)
        labelled = "with masks" if images.masks is not None else "no masks"
        self.say(f"parity check: int8 ONNX Runtime vs PyTorch fp32 on {len(images.files)} images of "
                 f"{self.request.calib} ({labelled}) at {card.crop_size}x{card.crop_size}")
        reference = torch_runner(self.net.cpu(), with_cam=with_cam, device="cpu")
        return check_on_images(reference, runner.run, images.inputs, tolerance_for("int8"), masks=images.masks)

    def check_existing(self) -> ExportOutcome:
        """``check_only``: the parity of the existing ``out`` (warning when it came from another checkpoint)."""
        from seco_deploy.data.io import file_sha256
        from seco_deploy.runtime.card import ModelCard, read_onnx_card
        from seco_deploy.runtime.engine_file import read_engine_file

        req = self.request
        if self.kind == "onnx":
            card = read_onnx_card(req.out)
        else:
            card = ModelCard.from_props(read_engine_file(req.out)[0], source=str(req.out))
        digest = file_sha256(req.checkpoint)
        if card.checkpoint_sha256 and card.checkpoint_sha256 != digest:
            self.say(f"warning: {req.out} was exported from another checkpoint "
                     f"(sha256 {card.checkpoint_sha256[:12]}..., this one {digest[:12]}...)")
        return ExportOutcome(path=req.out, card=card, parity=self.check(req.out, card))


def export_checkpoint(request: ExportRequest, progress: Callable[[str], None] | None = None) -> ExportOutcome:
    """``Exporter(request, progress).run()``."""
    return Exporter(request, progress).run()
