"""Where models run: the one rule that turns a ``--device`` string into a device, and the checks
for the GPU runtimes.

:func:`resolve_device` (training, prediction, export parity):

- ``auto``: ``cuda:LOCAL`` when PyTorch sees a CUDA GPU, else ``cpu``;
- ``cpu``; ``cuda`` -> ``cuda:LOCAL``; ``cuda:N`` -> that GPU;

with ``LOCAL`` the process's local rank (torchrun's ``LOCAL_RANK``; 0 outside torchrun). An unknown string raises
:class:`~seco_deploy.runtime.errors.BackendError` (exit 2); a CUDA device that is not there
raises :class:`~seco_deploy.runtime.errors.MissingRuntimeError` (exit 5).
:func:`require_cuda` and :func:`require_tensorrt` check the TensorRT path the same way, with
install hints matched to this PyTorch's CUDA version.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import torch

from seco_deploy.runtime.errors import BackendError, MissingRuntimeError

__all__ = [
    "available_cpus",
    "bf16_is_fast",
    "install_hint",
    "require_cuda",
    "require_gpu_runtime",
    "require_tensorrt",
    "resolve_device",
]


def resolve_device(spec: str | None = "auto", local_rank: int | None = None) -> torch.device:
    """The torch device that ``spec`` names (see the module docstring); ``local_rank`` defaults to
    the ``LOCAL_RANK`` that torchrun sets (0 outside torchrun)."""
    if local_rank is None:
        env = os.environ.get("LOCAL_RANK", "0")
        local_rank = int(env) if env.isdigit() else 0
        if torch.cuda.is_available():
            local_rank %= torch.cuda.device_count()
    text = (spec or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    kind, sep, index = text.partition(":")
    if kind != "cuda" or (sep and not index.isdigit()):
        raise BackendError(f"device {spec!r}: choose auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise MissingRuntimeError(
            f"device {spec!r} asked for a CUDA GPU but none is visible to PyTorch {torch.__version__} "
            "(a CUDA build of PyTorch and an NVIDIA driver are needed); use --device cpu"
        )
    device = torch.device("cuda", int(index) if sep else local_rank)
    if device.index >= torch.cuda.device_count():
        raise MissingRuntimeError(
            f"device {spec!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return device


def bf16_is_fast(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU with bf16 support, or a CPU with
    AVX-512 BF16 or AMX. Elsewhere bf16 is emulated and slower than fp32 (on an AVX2-only CPU a
    bf16 matmul ran at about 1/100 of fp32's rate here)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    return False


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def install_hint() -> str:
    """What to install for TensorRT, matched to this PyTorch's CUDA version."""
    cuda = torch.version.cuda
    if cuda:
        major = cuda.split(".")[0]
        return (
            f"install TensorRT 10 for CUDA {major}: `pip install 'tensorrt-cu{major}>=10'` "
            "(or `pip install 'seco-deploy[gpu]'`), on a machine with an NVIDIA GPU and its driver"
        )
    return (
        "install a CUDA build of PyTorch (https://pytorch.org/get-started/locally/), then TensorRT 10 for "
        "that CUDA version (`pip install 'tensorrt-cu12>=10'` for CUDA 12), on a machine with an NVIDIA GPU"
    )


def require_tensorrt() -> ModuleType:
    """Import ``tensorrt`` (>= 10) or raise :class:`MissingRuntimeError` saying what to install."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingRuntimeError(
            f"TensorRT is not installed (import tensorrt failed: {exc}); {install_hint()}"
        ) from exc
    major = int(str(getattr(trt, "__version__", "0")).split(".")[0] or 0)
    if major < 10:
        raise MissingRuntimeError(
            f"TensorRT {trt.__version__} is too old; seco-deploy needs TensorRT >= 10; {install_hint()}"
        )
    return trt


def require_cuda(device: str = "cuda") -> torch.device:
    """``device`` as a usable CUDA device, else :class:`MissingRuntimeError` saying what is missing."""
    if torch.version.cuda is None:
        raise MissingRuntimeError(
            f"this PyTorch ({torch.__version__}) is a CPU-only build, and TensorRT needs CUDA; {install_hint()}"
        )
    if not torch.cuda.is_available():
        raise MissingRuntimeError(
            f"no CUDA GPU is visible (torch {torch.__version__} reports torch.cuda.is_available() == False); "
            "run on a machine with an NVIDIA GPU and driver (check `nvidia-smi` and CUDA_VISIBLE_DEVICES)"
        )
    return resolve_device(device if device.strip().lower().startswith("cuda") else "cuda")


def require_gpu_runtime(device: str = "cuda") -> tuple[ModuleType, Any]:
    """``(tensorrt, torch.device)``; when anything is missing, one :class:`MissingRuntimeError` lists all of it."""
    problems: list[str] = []
    trt = dev = None
    try:
        trt = require_tensorrt()
    except MissingRuntimeError as exc:
        problems.append(str(exc))
    try:
        dev = require_cuda(device)
    except MissingRuntimeError as exc:
        problems.append(str(exc))
    if problems:
        raise MissingRuntimeError(". Also: ".join(problems))
    return trt, dev
