"""The formats ``seco benchmark`` compares: a runtime and a precision each, and what they need.

A format is ``RUNTIME[-PRECISION]`` (fp32 when the precision is left out):

========== =============================================================== =====================
name        model file and runtime                                          needs
========== =============================================================== =====================
torch       the checkpoint, PyTorch fp32                                    nothing
torch-bf16  the checkpoint, PyTorch under bf16 autocast                     native bf16 (GPU, or a
                                                                            CPU with AVX-512 BF16 /
                                                                            AMX) unless forced
onnx        ``seco export --format onnx``, ONNX Runtime                     onnxruntime
onnx-fp16   ``--fp16`` (LayerNorm fp32), ONNX Runtime                       onnxruntime, a GPU
onnx-int8   ``--int8`` (static QDQ, calibrated on the benchmark's images)   onnxruntime
opencv      ``--target opencv`` (TorchScript exporter), OpenCV DNN          opencv-python
trt-fp16    ``--format trt --fp16``, TensorRT                               TensorRT, a CUDA GPU
========== =============================================================== =====================

:func:`unavailable_reason` says, without importing any runtime, why this machine cannot run a
format (None when it can): such a format is a row of the table that gives the reason, never an
error. bf16 on a CPU that emulates it (about 100x slower than fp32 on an AVX2-only CPU) and fp16
in ONNX Runtime's CPU provider (which has no fp16 kernels for most operators and falls back
through casts) are not run unless named in ``--formats``; a named one runs and its figures show
the cost. TensorRT int8 is not offered: its calibrated build is not part of this project yet.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

from seco_deploy.runtime.device import bf16_is_fast

__all__ = ["DEFAULT_FORMATS", "FORMATS", "Format", "parse_formats", "unavailable_reason"]


@dataclass(frozen=True)
class Format:
    """One row of the benchmark: ``runtime`` (torch | onnxruntime | opencv | tensorrt), ``precision``
    (fp32 | bf16 | fp16 | int8) and ``export`` (the model-file kind: checkpoint | onnx | engine)."""

    name: str
    runtime: str
    precision: str
    export: str
    label: str

    @property
    def is_reference(self) -> bool:
        """The format every other is compared with (pixel agreement): PyTorch fp32."""
        return self.name == "torch"


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("torch", "torch", "fp32", "checkpoint", "PyTorch fp32"),
    Format("torch-bf16", "torch", "bf16", "checkpoint", "PyTorch bf16"),
    Format("onnx", "onnxruntime", "fp32", "onnx", "ONNX Runtime fp32"),
    Format("onnx-fp16", "onnxruntime", "fp16", "onnx", "ONNX Runtime fp16"),
    Format("onnx-int8", "onnxruntime", "int8", "onnx", "ONNX Runtime int8"),
    Format("opencv", "opencv", "fp32", "onnx", "OpenCV DNN fp32"),
    Format("trt-fp16", "tensorrt", "fp16", "engine", "TensorRT fp16"),
)}
DEFAULT_FORMATS = tuple(FORMATS)

_MODULES = {"onnxruntime": "onnxruntime", "opencv": "cv2", "tensorrt": "tensorrt"}
_INSTALL = {
    "onnxruntime": "pip install onnxruntime (onnxruntime-gpu on a GPU machine)",
    "opencv": "pip install opencv-python",
    "tensorrt": "pip install 'tensorrt-cu12>=10' on a machine with an NVIDIA GPU",
}


def parse_formats(text: str | None) -> tuple[list[Format], set[str]]:
    """``--formats a,b`` -> (the formats in table order, the names the user asked for explicitly).

    None or ``all`` gives every format with nothing explicit. Raises ``ValueError`` naming an
    unknown format and listing the known ones.
    """
    if text is None or text.strip().lower() in ("", "all"):
        return [FORMATS[n] for n in DEFAULT_FORMATS], set()
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ValueError(f"--formats: unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    chosen = set(names)
    return [FORMATS[n] for n in DEFAULT_FORMATS if n in chosen], chosen


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def unavailable_reason(fmt: Format, device: torch.device, explicit: bool = False) -> str | None:
    """Why this machine does not run ``fmt`` on ``device`` (None: it does); see the module docstring.

    ``explicit``: the user named the format, so a slow-but-possible one (emulated bf16, ONNX fp16 on
    a CPU) runs anyway.
    """
    if fmt.runtime == "tensorrt":
        if torch.version.cuda is None or not torch.cuda.is_available():
            return "no CUDA GPU here (TensorRT runs on NVIDIA GPUs)"
        if device.type != "cuda":
            return "--device is the CPU; TensorRT runs on the GPU (--device cuda)"
    module = _MODULES.get(fmt.runtime)
    if module is not None and not _has_module(module):
        return f"{fmt.runtime} is not installed ({_INSTALL[fmt.runtime]})"
    if fmt.runtime == "opencv" and device.type != "cpu":
        return "OpenCV DNN is measured on the CPU only (--device cpu)"
    if explicit:
        return None
    if fmt.precision == "bf16" and not bf16_is_fast(device):
        return (f"bf16 is emulated on this {device.type.upper()} (no native bf16: AVX-512 BF16 / AMX), far slower "
                "than fp32; name it in --formats to measure it anyway")
    if fmt.name == "onnx-fp16" and device.type == "cpu":
        return ("ONNX Runtime's CPU provider has no fp16 kernels for most operators (casts to fp32); "
                "name it in --formats to measure it anyway, or use --device cuda")
    return None
