"""TensorRT engine files: a model-card header in front of the TensorRT plan, and the profile shape.

TensorRT plans have no metadata slot, so an engine written by seco-deploy is

    b"SECOTRT1" | N as 8-byte little-endian unsigned integer | N bytes of JSON | the plan

where the JSON is the ``seco.*`` key/value mapping of the model card
(:meth:`seco_deploy.runtime.card.ModelCard.to_props`). :func:`read_engine_file` also accepts a
bare plan (its props are then empty). To hand the plan to other tools, strip the header:
``tail -c +$((17 + N)) model.engine``. :class:`ProfileShapes` is the engine's one optimisation
profile for the ``images`` input, as the builder sets it and the runner checks inputs against.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ENGINE_MAGIC", "ProfileShapes", "Shape", "read_engine_file", "write_engine_file"]

ENGINE_MAGIC = b"SECOTRT1"
_HEADER = struct.Struct("<Q")
Shape = tuple[int, int, int, int]


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


def write_engine_file(path: str | Path, plan: bytes, props: dict[str, str]) -> Path:
    """Write ``MAGIC | len | JSON(props) | plan`` atomically to ``path``."""
    from seco_deploy.data.io import atomic_write_bytes

    header = json.dumps(props, sort_keys=True).encode("utf-8")
    atomic_write_bytes(path, ENGINE_MAGIC + _HEADER.pack(len(header)) + header + bytes(plan))
    return Path(path)


def read_engine_file(path: str | Path) -> tuple[dict[str, str], bytes]:
    """``(model-card props, serialized plan)``; a bare TensorRT plan gives empty props."""
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
