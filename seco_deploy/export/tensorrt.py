"""TensorRT engines: optimisation-profile logic, engine build from an ONNX export, engine files.

Profile logic (plain functions, no TensorRT needed):
  - The predictor feeds the network squares (or, with ``--resize keep``, rectangles) whose
    sides are multiples of the patch size p. :func:`tta_sides` lists the sides of the test-time
    scales s of the training crop S, ``round(S * s / p) * p`` (at least p; the predictor's
    ``input_side`` rule). :func:`tta_profile` makes one profile covering them:
    ``min = (1, 3, smin, smin)``, ``opt = (b_opt, 3, S', S')`` with S' the side at scale 1 (or
    the side nearest to it), ``max = (b_max, 3, smax, smax)``; ``seco export`` widens ``smin``
    to the short side of 2:1 images (``min_aspect = 0.5``) and takes ``b_max`` = 2 x
    ``infer.batch`` (each image runs with its flip in one batch).
  - :func:`resolve_profile` applies user overrides (``--min/--opt/--max`` as ``NxCxHxW``) over
    that default and :func:`validate_profile` checks min <= opt <= max per axis, 3 channels,
    sides that are multiples of p, and agreement with a static export's fixed axes.

Engine build (:func:`build_engine`) uses the documented TensorRT 10 Python API: ``Builder``,
``OnnxParser.parse_from_file``, one ``IOptimizationProfile``, a workspace limit from
``set_memory_pool_limit`` and an optional timing cache file. Precision:
  - fp32: TF32 is switched off so the engine matches PyTorch fp32 within 1e-3.
  - fp16: the ONNX export is already fp16 with every LayerNorm computed in fp32 (see
    :mod:`seco_deploy.export.onnx_export`), built as a strongly typed network
    (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``), so TensorRT follows the graph's types.
    On a TensorRT without strong typing the fp32 export is built with ``BuilderFlag.FP16`` and
    every normalisation layer pinned to fp32 with ``OBEY_PRECISION_CONSTRAINTS``.

Engine files: TensorRT plans have no metadata slot, so an engine written by seco-deploy is
``b"SECOTRT1"``, the byte length of a JSON header as 8-byte little-endian unsigned integer, the
JSON header (the ``seco.*`` metadata mapping of :mod:`seco_deploy.export.metadata`), then the
serialized plan. :func:`read_engine_file` also accepts a bare plan (then the metadata is empty).
To hand the plan to other tools, strip the header: ``tail -c +$((17 + N)) model.engine``.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ENGINE_MAGIC = b"SECOTRT1"
_HEADER = struct.Struct("<Q")
Shape = tuple[int, int, int, int]


class MissingRuntimeError(RuntimeError):
    """TensorRT, a CUDA build of PyTorch or a CUDA GPU is missing; the message says what to install."""


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX model or build an engine; the message has TensorRT's errors."""


# ---------------------------------------------------------------------- profile logic
@dataclass(frozen=True)
class ProfileShapes:
    """One TensorRT optimisation profile for the ``images`` input: (N, 3, H, W) each."""

    min: Shape
    opt: Shape
    max: Shape

    def as_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    def covers(self, shape: Sequence[int]) -> bool:
        """True when ``shape`` lies inside [min, max] on every axis."""
        return all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max, strict=True))


def parse_shape(text: str) -> Shape:
    """``"2x3x448x448"`` (or with commas/spaces) -> ``(2, 3, 448, 448)``; ValueError otherwise."""
    parts = [p for p in re.split(r"[x,\s]+", text.strip().lower()) if p]
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise ValueError(f"shape {text!r} must be four positive integers N x 3 x H x W, e.g. 2x3x448x448")
    shape = tuple(int(p) for p in parts)
    if min(shape) < 1:
        raise ValueError(f"shape {text!r} has a zero axis")
    return shape  # type: ignore[return-value]


def side_for_scale(crop_size: int, scale: float, patch_size: int) -> int:
    """``round(crop_size * scale / p) * p``, at least ``p``: the input side at one TTA scale."""
    return max(patch_size, int(round(crop_size * scale / patch_size)) * patch_size)


def tta_sides(crop_size: int, scales: Sequence[float], patch_size: int) -> list[int]:
    """Sorted distinct input sides for the test-time scales of the training crop."""
    if not scales:
        raise ValueError("at least one test-time scale is needed")
    return sorted({side_for_scale(crop_size, s, patch_size) for s in scales})


def tta_profile(
    crop_size: int,
    scales: Sequence[float],
    patch_size: int,
    max_batch: int,
    opt_batch: int | None = None,
    min_aspect: float = 1.0,
) -> ProfileShapes:
    """One profile covering every TTA side from batch 1 to ``max_batch``.

    ``min`` is the side at the smallest scale of a crop shrunk by ``min_aspect`` (1.0: the
    square TTA inputs only; 0.5: also the short side of images up to 2:1 resized with the
    long side at the crop size, ``seco predict --resize keep``); ``max`` the side at the largest
    scale. ``opt`` uses the side at scale 1.0 when present (else the side nearest to the crop
    size) and ``opt_batch`` (default ``max_batch``): TensorRT tunes its kernels for ``opt``.
    """
    if max_batch < 1:
        raise ValueError("max_batch must be >= 1")
    if not 0 < min_aspect <= 1:
        raise ValueError(f"min_aspect must lie in (0, 1], got {min_aspect}")
    sides = tta_sides(crop_size, scales, patch_size)
    base = side_for_scale(crop_size, 1.0, patch_size)
    opt_side = min(sides, key=lambda s: (abs(s - base), s))
    low = side_for_scale(int(round(crop_size * min_aspect)), min(scales), patch_size)
    ob = max_batch if opt_batch is None else opt_batch
    if not 1 <= ob <= max_batch:
        raise ValueError(f"opt batch {ob} must lie in 1..{max_batch}")
    return ProfileShapes(
        min=(1, 3, low, low),
        opt=(ob, 3, opt_side, opt_side),
        max=(max_batch, 3, sides[-1], sides[-1]),
    )


def validate_profile(profile: ProfileShapes, patch_size: int, static_shape: Sequence[int] | None = None) -> None:
    """Raise ValueError naming the problem unless the profile is usable for this export.

    ``static_shape`` is the export's ``input_shape`` with -1 for dynamic axes; fixed axes must
    be equal in min, opt and max.
    """
    for name, shape in (("min", profile.min), ("opt", profile.opt), ("max", profile.max)):
        if len(shape) != 4:
            raise ValueError(f"profile {name} {shape} must have 4 axes N x 3 x H x W")
        if shape[1] != 3:
            raise ValueError(f"profile {name} {shape}: the images input has 3 channels")
        for side in shape[2:]:
            if side % patch_size:
                raise ValueError(f"profile {name} {shape}: sides must be multiples of the patch size {patch_size}")
    for axis, label in enumerate(("batch", "channels", "height", "width")):
        lo, mid, hi = profile.min[axis], profile.opt[axis], profile.max[axis]
        if not lo <= mid <= hi:
            raise ValueError(f"profile {label}: need min <= opt <= max, got {lo}, {mid}, {hi}")
    if static_shape is not None:
        for axis, fixed in enumerate(static_shape):
            if fixed == -1:
                continue
            got = {profile.min[axis], profile.opt[axis], profile.max[axis]}
            if got != {fixed}:
                raise ValueError(
                    f"the ONNX export fixes axis {axis} to {fixed}, but the profile asks for {sorted(got)}; "
                    "export with --dynamic or give shapes that match the static export"
                )


def resolve_profile(
    default: ProfileShapes,
    patch_size: int,
    min_shape: str | None = None,
    opt_shape: str | None = None,
    max_shape: str | None = None,
    static_shape: Sequence[int] | None = None,
) -> ProfileShapes:
    """Apply ``--min/--opt/--max`` strings over ``default``, pin static axes, then validate.

    When the export is static on an axis, that axis takes the static value in the default.
    """
    base = [list(default.min), list(default.opt), list(default.max)]
    if static_shape is not None:
        for shape in base:
            for axis, fixed in enumerate(static_shape):
                if fixed != -1:
                    shape[axis] = int(fixed)
    lo, mid, hi = (tuple(s) for s in base)
    profile = ProfileShapes(
        min=parse_shape(min_shape) if min_shape else lo,  # type: ignore[arg-type]
        opt=parse_shape(opt_shape) if opt_shape else mid,  # type: ignore[arg-type]
        max=parse_shape(max_shape) if max_shape else hi,  # type: ignore[arg-type]
    )
    validate_profile(profile, patch_size, static_shape)
    return profile


def workspace_bytes(gigabytes: float) -> int:
    """``--workspace`` in GiB to bytes (> 0)."""
    if not math.isfinite(gigabytes) or gigabytes <= 0:
        raise ValueError(f"workspace must be a positive number of GiB, got {gigabytes}")
    return int(gigabytes * (1 << 30))


# ---------------------------------------------------------------------- runtimes
def install_hint() -> str:
    """What to install for TensorRT, matched to this PyTorch's CUDA version."""
    try:
        import torch

        cuda = torch.version.cuda
    except ImportError:  # pragma: no cover - torch is a dependency
        cuda = None
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


def require_cuda(device: str = "cuda") -> Any:
    """Return ``torch.device(device)`` when it is a usable CUDA device, else raise :class:`MissingRuntimeError`."""
    import torch

    if torch.version.cuda is None:
        raise MissingRuntimeError(
            f"this PyTorch ({torch.__version__}) is a CPU-only build, and TensorRT needs CUDA; {install_hint()}"
        )
    if not torch.cuda.is_available():
        raise MissingRuntimeError(
            f"no CUDA GPU is visible (torch {torch.__version__} reports torch.cuda.is_available() == False); "
            "run on a machine with an NVIDIA GPU and driver (check `nvidia-smi` and CUDA_VISIBLE_DEVICES)"
        )
    dev = torch.device(device if device.startswith("cuda") else "cuda")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise MissingRuntimeError(f"{dev} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


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


# ---------------------------------------------------------------------- engine files
def write_engine_file(path: str | Path, plan: bytes, props: dict[str, str]) -> Path:
    """Write ``MAGIC | len | JSON(props) | plan`` atomically to ``path``."""
    from seco_deploy.data.io import atomic_write_bytes

    header = json.dumps(props, sort_keys=True).encode("utf-8")
    atomic_write_bytes(path, ENGINE_MAGIC + _HEADER.pack(len(header)) + header + bytes(plan))
    return Path(path)


def read_engine_file(path: str | Path) -> tuple[dict[str, str], bytes]:
    """``(metadata props, serialized plan)``; a bare TensorRT plan gives empty props."""
    data = Path(path).read_bytes()
    if not data.startswith(ENGINE_MAGIC):
        return {}, data
    start = len(ENGINE_MAGIC) + _HEADER.size
    if len(data) < start:
        raise ValueError(f"{path}: truncated engine header; rebuild it with `seco export --format trt`")
    (length,) = _HEADER.unpack_from(data, len(ENGINE_MAGIC))
    if start + length > len(data):
        raise ValueError(f"{path}: engine header runs past the end of the file; rebuild it")
    try:
        props = json.loads(data[start : start + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: engine header is not valid JSON ({exc}); rebuild it") from exc
    return {str(k): str(v) for k, v in props.items()}, data[start + length :]


# ---------------------------------------------------------------------- build
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
