"""Inference backends: one call from normalised images to logits, whatever runs the model.

The predictor (:mod:`seco_deploy.infer.predictor`) and the export parity check use them; test-time
augmentation, resizing, refinement and outputs are the predictor's, written once for every
backend: a backend only maps a batch to logits.

Backend contract (:class:`Backend`; ``OnnxBackend`` and ``TensorRTBackend`` follow it too)
-----------------------------------------------------------------------------------------
Constructor: ``Backend(path: str | Path, device: str = "auto", amp: str = "off")``.

- ``path``: the model file. ``device``: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (a backend
  may accept more, e.g. ONNX Runtime's ``tensorrt``). ``amp``: ``off`` | ``bf16`` | ``fp16``;
  a backend whose precision is fixed by its file may ignore ``amp`` with a warning logged.
- After construction: ``self.info`` is the :class:`ModelInfo` of the file (from its metadata;
  nothing else is read) and ``self.device`` is the ``torch.device`` where outputs live.
- Errors: a missing, unreadable or foreign file, bad metadata, or a device string the backend
  does not know raise ``ValueError`` (``BackendError`` is one; ``FileNotFoundError`` is also
  accepted) with a message naming the file and what to do: exit 2 in the CLI. A runtime that is
  not installed or a GPU that is not there raises
  :class:`seco_deploy.runtime.errors.MissingRuntimeError` saying what to install: exit 5.

Call: ``backend(images, with_cam=False) -> dict[str, torch.Tensor]``.

- ``images``: float32 ``(N, 3, H, W)``, contiguous, on ``backend.device``, normalised with
  ``info.mean``/``info.std`` (0-1 RGB), H and W multiples of ``info.patch_size``; N, H and W
  within ``info.input_shape`` (-1 = any) and N <= ``info.max_batch`` when that is set: the
  predictor guarantees all of this.
- Returns float32 tensors on ``backend.device``: ``"seg"`` ``(N, C+1, H/p, W/p)`` decoder
  logits, background first; with ``with_cam`` also ``"cam"`` ``(N, C, H/p, W/p)`` (raw class
  maps: no ReLU, not normalised) and ``"cls"`` ``(N, C)`` image logits. Asked for CAMs when ``"cam"`` is not
  in ``info.heads``, a backend raises ``BackendError``.
- ``close()`` releases sessions or GPU memory; calling the backend afterwards is an error.

:func:`open_backend` dispatches on the file's kind (:mod:`seco_deploy.runtime.model_file`):
``checkpoint`` -> :class:`TorchBackend`, ``onnx`` -> ``seco_deploy.runtime.onnx_backend.OnnxBackend``,
``engine`` -> ``seco_deploy.runtime.trt_backend.TensorRTBackend`` (imported only when needed).
"""

from __future__ import annotations

import abc
import contextlib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from seco_deploy.runtime.card import backend_outputs
from seco_deploy.runtime.device import resolve_device
from seco_deploy.runtime.errors import BackendError
from seco_deploy.runtime.model_file import model_kind

if TYPE_CHECKING:
    from seco_deploy.config import Config

__all__ = [
    "AMP_MODES",
    "Backend",
    "ModelInfo",
    "TorchBackend",
    "model_info_from_card",
    "model_info_from_config",
    "open_backend",
]

AMP_MODES = ("off", "bf16", "fp16")
_BACKENDS = {
    "checkpoint": ("seco_deploy.runtime.backends", "TorchBackend"),
    "onnx": ("seco_deploy.runtime.onnx_backend", "OnnxBackend"),
    "engine": ("seco_deploy.runtime.trt_backend", "TensorRTBackend"),
}



@dataclass
class ModelInfo:
    """What the predictor needs to know about a model, from its file alone.

    ``classes`` background first (C = len - 1); ``mean``/``std`` normalisation of 0-1 RGB;
    ``patch_size`` p; ``crop_size`` the training crop S (the TTA base size); ``mask_scales`` and
    ``cam_scales`` the default TTA scales; ``heads`` ``("seg",)`` or ``("seg", "cam")``;
    ``palette`` (256, 3) uint8; ``source`` the file; ``input_shape`` ``(N, 3, H, W)`` with -1 for
    dynamic axes; ``max_batch`` the largest batch the backend accepts (None: any);
    ``config`` the training :class:`~seco_deploy.config.Config` when the file carries it
    (PAR parameters, thresholds), else None; ``extra`` anything else worth showing.
    """

    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    patch_size: int
    crop_size: int
    mask_scales: tuple[float, ...]
    cam_scales: tuple[float, ...]
    heads: tuple[str, ...]
    palette: np.ndarray
    source: str
    input_shape: tuple[int, int, int, int] = (-1, 3, -1, -1)
    max_batch: int | None = None
    config: Config | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """C, the number of foreground classes."""
        return len(self.classes) - 1

    @property
    def has_cam(self) -> bool:
        return "cam" in self.heads


def _full_palette(palette: Any) -> np.ndarray:
    from seco_deploy.data.palette import VOC_PALETTE

    out = np.array(VOC_PALETTE, dtype=np.uint8, copy=True)
    pal = np.asarray(palette, dtype=np.int64).reshape(-1, 3)[:256]
    out[: len(pal)] = np.clip(pal, 0, 255).astype(np.uint8)
    return out


def model_info_from_config(cfg: Config, classes: list[str], patch_size: int, source: str) -> ModelInfo:
    """ModelInfo of a PyTorch checkpoint: both heads, dynamic shapes, VOC palette."""
    from seco_deploy.data.palette import VOC_PALETTE

    return ModelInfo(
        classes=[str(c) for c in classes],
        mean=tuple(float(v) for v in cfg.data.mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg.data.std),  # type: ignore[arg-type]
        patch_size=int(patch_size),
        crop_size=int(cfg.data.crop_size),
        mask_scales=tuple(float(s) for s in cfg.infer.mask_scales),
        cam_scales=tuple(float(s) for s in cfg.model.cam_scales),
        heads=("seg", "cam"),
        palette=np.array(VOC_PALETTE, dtype=np.uint8, copy=True),
        source=str(source),
        config=cfg,
    )


def model_info_from_card(meta: Any, source: str, max_batch: int | None = None) -> ModelInfo:
    """ModelInfo from the :class:`~seco_deploy.runtime.card.ModelCard` of an ONNX file or TensorRT engine.

    The embedded training config is parsed when present (an invalid one is ignored: only PAR
    parameters and thresholds come from it, with defaults otherwise).
    """
    from seco_deploy.config import Config, ConfigError

    cfg = None
    if getattr(meta, "config", ""):
        with contextlib.suppress(ConfigError):
            cfg = Config.from_yaml(meta.config)
    return ModelInfo(
        classes=[str(c) for c in meta.classes],
        mean=tuple(float(v) for v in meta.mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in meta.std),  # type: ignore[arg-type]
        patch_size=int(meta.patch_size),
        crop_size=int(meta.crop_size),
        mask_scales=tuple(float(s) for s in meta.mask_scales),
        cam_scales=tuple(float(s) for s in meta.cam_scales),
        heads=tuple(meta.heads),
        palette=_full_palette(meta.palette),
        source=str(source),
        input_shape=tuple(int(v) for v in meta.input_shape),  # type: ignore[arg-type]
        max_batch=max_batch,
        config=cfg,
        extra={"precision": getattr(meta, "precision", "fp32"), "iteration": getattr(meta, "iteration", -1)},
    )


class Backend(abc.ABC):
    """Maps normalised images to logits; see the module docstring for the full contract."""

    info: ModelInfo
    device: torch.device

    @abc.abstractmethod
    def __call__(self, images: torch.Tensor, with_cam: bool = False) -> dict[str, torch.Tensor]:
        """``images`` float32 (N, 3, H, W) on ``device`` -> ``{"seg"[, "cam", "cls"]}`` float32."""

    def close(self) -> None:  # noqa: B027 - optional hook; backends without resources need nothing
        """Release sessions / GPU memory."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunnerBackend(Backend):
    """A :class:`Backend` over a runner whose ``run(images)`` returns the graph's outputs by name
    (ONNX Runtime, TensorRT): subclasses set ``runner``, ``info``, ``device``, ``name`` (for errors)
    and ``cam_hint`` (how to get a file with the CAM head)."""

    runner: Any
    name: str = "model"
    cam_hint: str = "export with `seco export CHECKPOINT --heads seg,cam`"

    def __call__(self, images: torch.Tensor, with_cam: bool = False) -> dict[str, torch.Tensor]:
        if self.runner is None:
            raise BackendError(f"the {self.name} backend for {self.info.source} was closed")
        if with_cam and not self.info.has_cam:
            raise BackendError(f"{self.info.source} has no CAM head; {self.cam_hint} for pseudo-label mode")
        return backend_outputs(self.runner.run(images), ("seg", "cam") if with_cam else ("seg",))


class TorchBackend(Backend):
    """A ``seco train`` checkpoint run with PyTorch (``SeCoNet.forward_infer``), optional autocast."""

    def __init__(self, path: str | Path, device: str = "auto", amp: str = "off") -> None:
        from seco_deploy.runtime.checkpoint import CheckpointError, load_for_inference

        if amp not in AMP_MODES:
            raise BackendError(f"--amp {amp!r}: choose one of {', '.join(AMP_MODES)}")
        self.device = resolve_device(device)
        if amp == "fp16" and self.device.type == "cpu":
            raise BackendError("--amp fp16 needs a CUDA device; on CPU use --amp bf16 or off")
        try:
            net, cfg, classes = load_for_inference(path, self.device)
        except CheckpointError as exc:
            raise BackendError(str(exc)) from exc
        self.net = net
        self.amp = amp
        self.info = model_info_from_config(cfg, classes, net.patch_size, str(path))

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def __call__(self, images: torch.Tensor, with_cam: bool = False) -> dict[str, torch.Tensor]:
        if self.net is None:
            raise BackendError("this backend was closed")
        with torch.inference_mode(), self._autocast():
            out = self.net.forward_infer(images, with_cam=with_cam)
        return {k: v.float() for k, v in backend_outputs(out).items()}

    def close(self) -> None:
        self.net = None  # type: ignore[assignment]


def open_backend(path: str | Path, device: str = "auto", amp: str = "off",
                 threads: int | None = None) -> tuple[Backend, ModelInfo]:
    """Open a model file with the backend of its kind; returns ``(backend, backend.info)``.

    ``threads``: ONNX Runtime's intra-op CPU threads (None: every CPU); PyTorch's are the process's
    (``torch.set_num_threads``), TensorRT has none.
    """
    p = Path(path)
    kind = model_kind(p)
    if not p.is_file():
        raise BackendError(f"model {p} does not exist")
    module_name, class_name = _BACKENDS[kind]
    try:
        module = importlib.import_module(module_name)
        backend_cls = getattr(module, class_name)
    except (ImportError, AttributeError) as exc:
        raise BackendError(f"the {class_name} backend for {kind} files is not available in this build ({exc})") from exc
    try:
        extra = {"threads": threads} if kind == "onnx" and threads is not None else {}
        backend = backend_cls(p, device=device, amp=amp, **extra)
    except FileNotFoundError as exc:
        raise BackendError(str(exc)) from exc
    return backend, backend.info
