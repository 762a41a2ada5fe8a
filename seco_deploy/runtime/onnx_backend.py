"""ONNX Runtime backend: ``images (N, 3, H, W) float32 -> {"seg", "cam", "cls"}`` torch tensors.

The model file's model card (:mod:`seco_deploy.runtime.card`) supplies classes,
normalisation, patch size, crop size, scales and heads, so nothing else is read.

Devices (``device``):
  - ``cpu``: ``CPUExecutionProvider``, tuned by :func:`cpu_session_options` (intra-op threads =
    the CPUs this process may use, one inter-op thread, sequential execution, every graph
    optimisation level up to ``ORT_ENABLE_EXTENDED`` (the fastest here, measured with an earlier
    ``benchmarks/export_predict.py``), denormals flushed to zero, memory-pattern reuse, and the
    intra-op threads sleep between runs instead of spinning: the predictor decodes, upsamples and
    writes between runs, and spinning threads take those cores (on 2 CPUs, int8 end to end 31.9 /
    33.6 img/s without spinning against 25.7 / 30.1 with it, fp32 even, batch-1 latency 10-25 %
    lower; ``seco benchmark``'s measurement, alternated).
  - ``cuda`` / ``cuda:N``: ``CUDAExecutionProvider`` (needs ``onnxruntime-gpu``); inputs and
    outputs stay on the GPU as torch CUDA tensors through I/O binding.
  - ``tensorrt`` / ``tensorrt:N``: ``TensorrtExecutionProvider`` (TensorRT libraries and
    ``onnxruntime-gpu``), falling back to CUDA then CPU for unsupported nodes; the precision is
    the graph's (an fp16 export runs in fp16 with LayerNorm in fp32).
  - ``auto``: CUDA when ``onnxruntime-gpu`` and a GPU are present, else CPU.
A missing provider raises :class:`~seco_deploy.runtime.errors.MissingRuntimeError` saying
what to install (exit 5 in the CLI).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seco_deploy.runtime.backends import RunnerBackend, model_info_from_card
from seco_deploy.runtime.card import INPUT_NAME, ModelCard
from seco_deploy.runtime.device import available_cpus
from seco_deploy.runtime.errors import BackendError, MissingRuntimeError

log = logging.getLogger(__name__)

OPT_LEVELS = ("disable", "basic", "extended", "all")
DEFAULT_OPT_LEVEL = "extended"


def cpu_session_options(threads: int | None = None, opt_level: str = DEFAULT_OPT_LEVEL) -> Any:
    """ONNX Runtime session options for CPU inference (see the module docstring)."""
    import onnxruntime as ort

    if opt_level not in OPT_LEVELS:
        raise ValueError(f"graph optimisation level {opt_level!r}; choose one of {', '.join(OPT_LEVELS)}")
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[opt_level]
    so.intra_op_num_threads = threads if threads else available_cpus()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_mem_pattern = True
    so.enable_cpu_mem_arena = True
    so.log_severity_level = 3
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def resolve_providers(device: str, available: list[str]) -> tuple[list[Any], torch.device]:
    """Execution providers (with options) and the torch device outputs live on, for ``device``."""
    dev = device.strip().lower()
    kind, _, index_text = dev.partition(":")
    if index_text and not index_text.isdigit():
        raise BackendError(f"device {device!r}: the index after ':' must be a number")
    index = int(index_text) if index_text else 0
    gpu_hint = (
        "install onnxruntime-gpu matching your CUDA version (`pip uninstall onnxruntime && "
        "pip install onnxruntime-gpu`) on a machine with an NVIDIA GPU"
    )
    if kind == "auto":
        kind = "cuda" if "CUDAExecutionProvider" in available and torch.cuda.is_available() else "cpu"
    if kind == "cpu":
        return ["CPUExecutionProvider"], torch.device("cpu")
    if kind == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise MissingRuntimeError(
                f"ONNX Runtime here has no CUDA provider (available: {', '.join(available)}); {gpu_hint}"
            )
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], torch.device("cuda", index)
    if kind in ("tensorrt", "trt"):
        if "TensorrtExecutionProvider" not in available:
            raise MissingRuntimeError(
                f"ONNX Runtime here has no TensorRT provider (available: {', '.join(available)}); {gpu_hint}, "
                "plus TensorRT 10 (`pip install tensorrt-cu12` for CUDA 12)"
            )
        # precision follows the graph: an fp16 export runs in fp16 (LayerNorm fp32), an fp32 one in fp32
        trt_opts = {"device_id": index, "trt_fp16_enable": False, "trt_engine_cache_enable": False}
        return (
            [("TensorrtExecutionProvider", trt_opts), ("CUDAExecutionProvider", {"device_id": index}),
             "CPUExecutionProvider"],
            torch.device("cuda", index),
        )
    raise BackendError(f"device {device!r} is not one of auto, cpu, cuda[:N], tensorrt[:N] for ONNX Runtime")


class OnnxRunner:
    """An ONNX Runtime session over one exported model; ``run(images)`` -> ONNX output names."""

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        threads: int | None = None,
        opt_level: str = DEFAULT_OPT_LEVEL,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model {self.path} does not exist")
        providers, self.device = resolve_providers(device, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(
                str(self.path), cpu_session_options(threads, opt_level), providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"ONNX Runtime cannot load {self.path}: {exc}") from exc
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        self.card = ModelCard.from_props(props, source=str(self.path))
        self.output_names = [o.name for o in self.session.get_outputs()]
        missing = [n for n in self.card.output_names if n not in self.output_names]
        if missing:
            raise ValueError(f"{self.path}: its metadata promises outputs {missing} that the graph lacks; re-export")
        self.providers = self.session.get_providers()

    def check_shape(self, images: torch.Tensor) -> None:
        """Raise ValueError naming the problem when ``images`` does not fit the exported input."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        p = self.card.patch_size
        if images.shape[2] % p or images.shape[3] % p:
            raise ValueError(f"image sides {tuple(images.shape[2:])} must be multiples of the patch size {p}")
        for axis, fixed in enumerate(self.card.input_shape):
            if fixed != -1 and images.shape[axis] != fixed:
                raise ValueError(
                    f"{self.path} is a static export with input shape {self.card.input_shape}; "
                    f"got {tuple(images.shape)}"
                )

    def run(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``images`` (N, 3, H, W) float32 -> ``{"seg_logits", ["cams", "cls_logits"]}`` on :attr:`device`."""
        self.check_shape(images)
        if self.device.type == "cuda":
            return self._run_bound(images)
        x = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        outs = self.session.run(self.output_names, {INPUT_NAME: x})
        return {name: torch.from_numpy(out) for name, out in zip(self.output_names, outs, strict=True)}

    def _run_bound(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """CUDA: bind torch tensors directly (no host round trip)."""
        x = images.detach().to(self.device, torch.float32).contiguous()
        n, _, h, w = x.shape
        p = self.card.patch_size
        c = self.card.num_classes
        shapes = {"seg_logits": (n, c + 1, h // p, w // p), "cams": (n, c, h // p, w // p), "cls_logits": (n, c)}
        binding = self.session.io_binding()
        index = self.device.index or 0
        binding.bind_input(INPUT_NAME, "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
        outs = {}
        for name in self.output_names:
            out = torch.empty(shapes[name], dtype=torch.float32, device=self.device)
            binding.bind_output(name, "cuda", index, np.float32, tuple(out.shape), out.data_ptr())
            outs[name] = out
        torch.cuda.current_stream(self.device).synchronize()  # the input is ready before ORT's stream reads it
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return outs


class OnnxBackend(RunnerBackend):
    """The :class:`~seco_deploy.runtime.backends.Backend` over an exported ``.onnx`` (ONNX Runtime).

    ``amp`` is ignored (the file fixes the precision; an fp16 export runs in fp16) with a
    warning when it is not ``off``. ``threads`` and ``opt_level`` tune the CPU session.
    """

    name = "ONNX"
    cam_hint = "re-export with `seco export CHECKPOINT --heads seg,cam`"

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        amp: str = "off",
        threads: int | None = None,
        opt_level: str = DEFAULT_OPT_LEVEL,
    ) -> None:
        self.runner: OnnxRunner | None = OnnxRunner(path, device=device, threads=threads, opt_level=opt_level)
        if amp != "off":
            log.warning("%s: --amp %s ignored, the ONNX file fixes the precision (%s)", path, amp,
                        self.runner.card.precision)
        self.device = self.runner.device
        self.info = model_info_from_card(self.runner.card, str(path))
        self.info.extra["providers"] = list(self.runner.providers)

    def close(self) -> None:
        self.runner = None
