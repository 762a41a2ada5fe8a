"""TensorRT engine build from an ONNX export (TensorRT >= 10 Python API).

:func:`build_engine` uses ``Builder``, ``OnnxParser.parse_from_file``, one
``IOptimizationProfile`` (:mod:`seco_deploy.export.tensorrt.profile`), a workspace limit from
``set_memory_pool_limit`` and an optional timing cache file. Precision:
  - fp32: TF32 is switched off so the engine matches PyTorch fp32 within 1e-3.
  - fp16: the ONNX export is already fp16 with every LayerNorm computed in fp32 (see
    :mod:`seco_deploy.export.onnx_export`), built as a strongly typed network
    (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``), so TensorRT follows the graph's types.
    On a TensorRT without strong typing the fp32 export is built with ``BuilderFlag.FP16`` and
    every normalisation layer pinned to fp32 with ``OBEY_PRECISION_CONSTRAINTS``.
The engine file itself (model-card header + plan) is :mod:`seco_deploy.runtime.engine_file`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from seco_deploy.runtime.device import require_cuda, require_tensorrt
from seco_deploy.runtime.engine_file import ProfileShapes


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX model or build an engine; the message has TensorRT's errors."""


def workspace_bytes(gigabytes: float) -> int:
    """``--workspace`` in GiB to bytes (> 0)."""
    if not math.isfinite(gigabytes) or gigabytes <= 0:
        raise ValueError(f"workspace must be a positive number of GiB, got {gigabytes}")
    return int(gigabytes * (1 << 30))


@dataclass
class EngineBuildOptions:
    """How to build: profile, precision, workspace (GiB) and an optional timing-cache file."""

    profile: ProfileShapes
    fp16: bool = False
    workspace_gb: float = 4.0
    timing_cache: Path | None = None
    input_name: str = "images"


def strongly_typed_available(trt: ModuleType) -> bool:
    """True when this TensorRT can build strongly typed networks (10.x with the flag, and 11.x)."""
    return hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")


def fp16_needs_fp16_onnx(trt: ModuleType) -> bool:
    """Under ``--fp16``: strong typing takes precision from the graph, so the ONNX must be fp16."""
    return strongly_typed_available(trt)


def _pin_normalization_fp32(trt: ModuleType, network: Any) -> int:
    """Weakly typed fp16 builds: force every normalisation layer to compute and output fp32."""
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == trt.LayerType.NORMALIZATION:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned += 1
    return pinned


def build_engine(onnx_path: str | Path, options: EngineBuildOptions) -> tuple[bytes, dict[str, Any]]:
    """Parse ``onnx_path`` and build a serialized engine; returns ``(plan, build details)``.

    Raises :class:`MissingRuntimeError` without TensorRT or CUDA and :class:`EngineBuildError`
    when parsing or building fails (TensorRT's messages included).
    """
    trt = require_tensorrt()
    require_cuda()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strong = options.fp16 and strongly_typed_available(trt)
    flags = (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)) if strong else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}: {errors or 'no detail'}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes(options.workspace_gb))
    pinned = 0
    if not options.fp16 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if options.fp16 and not strong:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = _pin_normalization_fp32(trt, network)

    profile = builder.create_optimization_profile()
    p = options.profile
    profile.set_shape(options.input_name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)

    cache = None
    if options.timing_cache is not None:
        blob = options.timing_cache.read_bytes() if options.timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(
            f"TensorRT failed to build an engine from {onnx_path} (see its messages above); try a larger "
            "--workspace or a narrower --min/--max profile"
        )
    if cache is not None and options.timing_cache is not None:
        from seco_deploy.data.io import atomic_write_bytes

        atomic_write_bytes(options.timing_cache, bytes(config.get_timing_cache().serialize()))
    details = {
        "tensorrt_version": str(trt.__version__),
        "strongly_typed": bool(strong),
        "normalization_layers_pinned_fp32": pinned,
        "profile": p.as_dict(),
        "workspace_gb": options.workspace_gb,
        "device_name": _device_name(),
    }
    return bytes(plan), details


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name(torch.cuda.current_device()) if torch.cuda.is_available() else ""
