"""DataLoader worker processes: one thread each, and a temporary folder that Unix sockets fit in.

:func:`worker_init_fn` is the ``worker_init_fn`` of every DataLoader with workers in this package
(training batches, prediction decoding):

- one OpenCV thread per worker (the workers run beside the model's threads; torch already runs
  one thread in a worker); only in workers started fresh (``spawn``): in a worker forked from a
  process whose OpenCV thread pool has run, touching that pool can hang the worker;
- :func:`short_temp_dir`: a worker sends tensors to the main process as shared-memory file
  descriptors, and Python passes those through a Unix socket created in the temporary folder
  (``TMPDIR/pymp-XXXXXXXX/listener-XXXXXXXX``). A socket path holds at most 107 bytes, so under a
  long ``TMPDIR`` (cluster jobs often have one) the worker would fail to send and the loader would
  wait forever. When ``TMPDIR`` is too long, the worker's temporary folder becomes the first
  short, writable one of :data:`SHORT_TEMP_DIRS`.
"""

from __future__ import annotations

import os
import tempfile

_IMPORTED_IN = os.getpid()  # a forked worker inherits this module: then its pid differs

__all__ = ["SHORT_TEMP_DIRS", "SOCKET_PATH_MAX", "short_temp_dir", "worker_init_fn"]

SOCKET_PATH_MAX = 107  # bytes of an AF_UNIX socket path (sun_path is 108 with the NUL)
_SOCKET_SUFFIX = len("/pymp-xxxxxxxx/listener-xxxxxxxx") + 8  # what multiprocessing adds, with room
SHORT_TEMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


def short_temp_dir(current: str | None = None) -> str:
    """``current`` (default: :func:`tempfile.gettempdir`) when Unix sockets fit under it, else the
    first writable folder of :data:`SHORT_TEMP_DIRS` (``current`` when none is writable)."""
    current = current if current is not None else tempfile.gettempdir()
    if len(os.fsencode(current)) + _SOCKET_SUFFIX <= SOCKET_PATH_MAX:
        return current
    for folder in SHORT_TEMP_DIRS:
        if os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK):
            return folder
    return current


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a socket-safe temp folder; one OpenCV thread when spawned."""
    tempfile.tempdir = short_temp_dir()
    if os.getpid() == _IMPORTED_IN:  # started fresh, not forked
        import cv2

        cv2.setNumThreads(1)
