"""The test session's environment: nothing the suite checks depends on the machine it runs on.

- Libraries that cache under ``HOME`` (matplotlib's font cache, torch and timm hubs, XDG caches)
  write into a folder of this session instead (removed when the session ends), so a ``HOME``
  without write access (a CI user, a container) changes nothing; subprocesses inherit the same
  variables.
- CLI output: every CLI test runs through ``tests/_cli.py`` (pinned console size, matching blind
  to line breaks); seco's consoles never wrap output that is not a terminal.
- Temporary files live under pytest's ``tmp_path`` (which follows ``TMPDIR``); tests never write
  to the current directory, and refer to repository files from ``__file__``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_CACHE = tempfile.mkdtemp(prefix="seco-test-cache-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
for _name, _sub in (("MPLCONFIGDIR", "matplotlib"), ("XDG_CACHE_HOME", "xdg"), ("TORCH_HOME", "torch"),
                    ("HF_HOME", "huggingface")):
    os.environ[_name] = os.path.join(_CACHE, _sub)
