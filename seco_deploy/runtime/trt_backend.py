"""TensorRT backend: runs a ``seco export --format trt`` engine with torch CUDA tensors as buffers.

No pycuda: inputs and outputs are torch CUDA tensors whose ``data_ptr()`` are handed to
``IExecutionContext.set_tensor_address``; the engine runs with ``execute_async_v3`` on the
current torch CUDA stream. The engine file's header (:mod:`seco_deploy.runtime.engine_file`)
carries the model card, so nothing else is read.

An engine only runs with the TensorRT version and GPU model that built it; a mismatch is
reported with both sides named and the advice to rebuild.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from seco_deploy.runtime.backends import RunnerBackend, model_info_from_card
from seco_deploy.runtime.card import INPUT_NAME, CardError, ModelCard
from seco_deploy.runtime.device import require_cuda, require_tensorrt
from seco_deploy.runtime.engine_file import ProfileShapes, read_engine_file
from seco_deploy.runtime.errors import BackendError

log = logging.getLogger(__name__)


def torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    """TensorRT tensor dtype -> torch dtype."""
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.bool: torch.bool}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    if dtype not in table:
        raise ValueError(f"engine tensor dtype {dtype} is not supported by the torch buffers")
    return table[dtype]


class TensorRTRunner:
    """A deserialized engine and one execution context; ``run(images)`` -> ONNX output names."""

    def __init__(self, path: str | Path, device: str = "cuda") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"TensorRT engine {self.path} does not exist")
        trt = require_tensorrt()
        self.device = require_cuda(device)
        self._trt = trt
        props, plan = read_engine_file(self.path)
        if not props:
            raise CardError(
                f"{self.path} is a bare TensorRT plan without seco-deploy metadata; build it with "
                "`seco export CHECKPOINT --format trt` so it carries classes, normalisation and sizes"
            )
        self.card = ModelCard.from_props(props, source=str(self.path))
        self.logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            self.runtime = trt.Runtime(self.logger)
            self.engine = self.runtime.deserialize_cuda_engine(plan)
            if self.engine is None:
                built = self.card.extra.get("tensorrt_version", "?")
                gpu = self.card.extra.get("device_name", "?")
                here = torch.cuda.get_device_name(self.device)
                raise ValueError(
                    f"TensorRT {trt.__version__} on {here} could not load {self.path} (built with TensorRT "
                    f"{built} on {gpu}); engines are tied to both: rebuild it here with `seco export --format trt`"
                )
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if INPUT_NAME not in names:
            raise ValueError(f"{self.path}: the engine has no '{INPUT_NAME}' input (tensors: {names})")
        lo, opt, hi = self.engine.get_tensor_profile_shape(INPUT_NAME, 0)
        self.profile = ProfileShapes(tuple(lo), tuple(opt), tuple(hi))  # type: ignore[arg-type]

    def check_shape(self, images: torch.Tensor) -> None:
        """Raise ValueError unless ``images`` lies inside the engine's optimisation profile."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        if not self.profile.covers(tuple(images.shape)):
            raise ValueError(
                f"input {tuple(images.shape)} is outside the engine's profile min {self.profile.min} / max "
                f"{self.profile.max}; rebuild with wider --min/--max or use smaller --batch/--scales"
            )

    def run(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``images`` (N, 3, H, W) -> ``{"seg_logits", ["cams", "cls_logits"]}`` float32 on :attr:`device`."""
        self.check_shape(images)
        x = images.detach().to(self.device, torch.float32).contiguous()
        ctx = self.context
        if not ctx.set_input_shape(INPUT_NAME, tuple(x.shape)):
            raise ValueError(f"TensorRT refused input shape {tuple(x.shape)}")
        ctx.set_tensor_address(INPUT_NAME, x.data_ptr())
        outs: dict[str, torch.Tensor] = {}
        for name in self.output_names:
            shape = tuple(ctx.get_tensor_shape(name))
            dtype = torch_dtype(self._trt, self.engine.get_tensor_dtype(name))
            out = torch.empty(shape, dtype=dtype, device=self.device)
            ctx.set_tensor_address(name, out.data_ptr())
            outs[name] = out
        stream = torch.cuda.current_stream(self.device)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT failed to run {self.path} on input {tuple(x.shape)}")
        stream.synchronize()
        return {name: out.float() for name, out in outs.items()}


class TensorRTBackend(RunnerBackend):
    """The :class:`~seco_deploy.runtime.backends.Backend` over a ``seco export --format trt`` engine.

    ``device``: ``auto``/``cuda``/``cuda:N`` (``cpu`` is refused: TensorRT needs a GPU).
    ``amp`` is ignored (the engine fixes the precision) with a warning when it is not ``off``.
    ``info.max_batch`` is the profile's max batch; ``info.extra["profile"]`` its min/opt/max.
    """

    name = "TensorRT"
    cam_hint = "rebuild with `seco export CHECKPOINT --format trt --heads seg,cam`"

    def __init__(self, path: str | Path, device: str = "auto", amp: str = "off") -> None:
        spec = (device or "auto").strip().lower()
        if spec == "cpu":
            raise BackendError(f"{path}: a TensorRT engine runs on a CUDA GPU only; use --device cuda, or the .onnx")
        self.runner: TensorRTRunner | None = TensorRTRunner(path, device="cuda" if spec == "auto" else spec)
        if amp != "off":
            log.warning("%s: --amp %s ignored, the engine fixes the precision (%s)", path, amp,
                        self.runner.card.precision)
        self.device = self.runner.device
        self.info = model_info_from_card(self.runner.card, str(path), max_batch=self.runner.profile.max[0])
        self.info.extra["profile"] = self.runner.profile.as_dict()

    def close(self) -> None:
        if self.runner is not None:
            del self.runner.context, self.runner.engine, self.runner.runtime
        self.runner = None
