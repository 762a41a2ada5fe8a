"""The two ways a model file or runtime can be unusable, as the CLI reports them.

- :class:`BackendError` (a ``ValueError``): what the user gave cannot be used: a missing,
  unreadable or foreign model file, bad metadata, an unknown device string, an option the
  backend does not support. The message names the file or option and what to do; exit 2.
- :class:`MissingRuntimeError` (a ``RuntimeError``): something this machine lacks: a CUDA GPU,
  a CUDA build of PyTorch, TensorRT, ONNX Runtime's GPU providers. The message says what to
  install; exit 5.
"""

from __future__ import annotations

__all__ = ["BackendError", "MissingRuntimeError"]


class BackendError(ValueError):
    """A model file or backend option cannot be used; the message says which and what to do."""


class MissingRuntimeError(RuntimeError):
    """A GPU, CUDA build or runtime library is missing; the message says what to install."""
