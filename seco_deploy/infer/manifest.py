"""The record of a prediction run: ``OUT/run.json`` (the settings), the manifest, the summary.

- ``run.json`` holds the signature of the settings that shape the outputs (mode, model hash,
  scales, ...). :func:`check_run_file` refuses (:class:`RunMismatchError`) a run whose signature
  differs from the one already in OUT, unless ``overwrite``: re-running would mix old and new
  outputs. It then writes the new signature.
- The manifest (``manifest.jsonl``, or one file per shard) has one JSON line per image
  (``type`` ``image``: ``path``, ``name``, ``status`` ok / skipped / failed, ``reason``, ``size``,
  ``classes``, ``tags``, ``outputs``, ``seconds``) and, last, the ``summary`` line.
  :class:`Manifest` writes them as they come and keeps the :class:`RunSummary`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from seco_deploy.data.io import atomic_write_text

__all__ = ["RUN_FILE", "Manifest", "RunMismatchError", "RunSummary", "check_run_file"]

RUN_FILE = "run.json"


class RunMismatchError(ValueError):
    """OUT holds outputs made with other settings; re-running would mix them."""


@dataclass
class RunSummary:
    """Counts of a run; ``exit_code`` 0 when nothing failed, 3 otherwise."""

    total: int = 0
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    compute_seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 3 if self.failed else 0

    def as_record(self) -> dict[str, Any]:
        processed = self.ok
        return {
            "type": "summary",
            "images": self.total,
            "ok": self.ok,
            "skipped": self.skipped,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(processed / self.seconds, 3) if self.seconds > 0 and processed else 0.0,
        }


def check_run_file(out_dir: Path, signature: dict[str, Any], overwrite: bool) -> None:
    """Create ``out_dir``; refuse other settings over existing outputs (see the module docstring)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run_file = out_dir / RUN_FILE
    if run_file.exists() and not overwrite:
        try:
            old = json.loads(run_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict) and old.get("signature") not in (None, signature):
            keys = sorted(set(signature) | set(old["signature"]))
            diffs = [k for k in keys if old["signature"].get(k) != signature.get(k)]
            raise RunMismatchError(
                f"{out_dir} holds outputs made with other settings ({', '.join(diffs)} differ); re-running "
                "would mix them: pass --overwrite to redo every image, or choose another --out"
            )
    atomic_write_text(run_file, json.dumps({"signature": signature}, indent=2) + "\n")


class Manifest:
    """Writes image records as they come (flushed line by line) and counts them into :attr:`summary`."""

    def __init__(self, handle: IO[str], total: int, on_record: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.handle = handle
        self.summary = RunSummary(total=total)
        self.on_record = on_record

    def emit(self, record: dict[str, Any]) -> None:
        status = record["status"]
        if status == "ok":
            self.summary.ok += 1
        elif status == "skipped":
            self.summary.skipped += 1
        else:
            self.summary.failed += 1
            self.summary.failures.append((record["path"], record.get("reason", "")))
        self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.handle.flush()
        if self.on_record is not None:
            self.on_record(record)

    def close(self, **extra: Any) -> None:
        """Write the summary line (with ``extra`` fields)."""
        record = self.summary.as_record()
        record.update(extra)
        self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.handle.flush()
