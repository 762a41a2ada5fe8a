"""Model files: the one table from file suffix to kind.

=========================  ==============  =========================================
suffix                     kind            what it is
=========================  ==============  =========================================
``.pt``, ``.pth``          ``checkpoint``  a ``seco train`` checkpoint (PyTorch)
``.onnx``                  ``onnx``        a ``seco export --format onnx`` file
``.engine``, ``.plan``,    ``engine``      a ``seco export --format trt`` engine
``.trt``                                   (TensorRT plan behind a model-card header)
=========================  ==============  =========================================
"""

from __future__ import annotations

from pathlib import Path

from seco_deploy.runtime.errors import BackendError

__all__ = ["MODEL_KINDS", "SUFFIXES", "model_kind", "suffixes_of"]

SUFFIXES: dict[str, str] = {
    ".pt": "checkpoint",
    ".pth": "checkpoint",
    ".onnx": "onnx",
    ".engine": "engine",
    ".plan": "engine",
    ".trt": "engine",
}
MODEL_KINDS = ("checkpoint", "onnx", "engine")


def model_kind(path: str | Path) -> str:
    """``checkpoint``, ``onnx`` or ``engine`` from the suffix; :class:`BackendError` for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise BackendError(
            f"model {path}: unknown file type {suffix or '(no suffix)'!r}; give a checkpoint (.pt), "
            "an ONNX model (.onnx) or a TensorRT engine (.engine/.plan)"
        )
    return SUFFIXES[suffix]


def suffixes_of(kind: str) -> tuple[str, ...]:
    """The suffixes of one kind, in table order (the first is the one written by default)."""
    return tuple(s for s, k in SUFFIXES.items() if k == kind)
