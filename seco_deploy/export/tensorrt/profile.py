"""TensorRT optimisation profiles: plain functions of the test-time sizes (no TensorRT needed).

The predictor feeds the network squares (or, with ``--resize keep``, rectangles) whose sides are
multiples of the patch size p, :func:`seco_deploy.cam.scaled_size` of the training crop S at
each test-time scale s. :func:`tta_sides` lists those sides; :func:`tta_profile` makes one
profile covering them: ``min = (1, 3, smin, smin)``, ``opt = (b_opt, 3, S', S')`` with S' the
side at scale 1 (or the side nearest to it), ``max = (b_max, 3, smax, smax)``; ``seco export``
widens ``smin`` to the short side of 2:1 images (``min_aspect = 0.5``) and takes ``b_max`` = 2 x
``infer.batch`` (each image runs with its flip in one batch). :func:`resolve_profile` applies
user overrides (``--min/--opt/--max`` as ``NxCxHxW``) over that default and
:func:`validate_profile` checks min <= opt <= max per axis, 3 channels, sides that are multiples
of p, and agreement with a static export's fixed axes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from seco_deploy.cam import scaled_size
from seco_deploy.runtime.engine_file import ProfileShapes, Shape

__all__ = ["parse_shape", "resolve_profile", "side_for_scale", "tta_profile", "tta_sides", "validate_profile"]


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
    """The input side of a square crop at one TTA scale: :func:`seco_deploy.cam.scaled_size`."""
    return scaled_size(crop_size, crop_size, scale, patch_size)[0]


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
