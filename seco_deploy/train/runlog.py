"""Run records: ``RUN/metrics.jsonl``, TensorBoard (when installed), progress bar, peak memory.

``metrics.jsonl`` holds one JSON object a line. Training lines (``"kind": "train"``) have
``iteration``, ``lr``, every loss term by name (``cls``, ``cls_aux``, ``ptc``, ``lig``, ``lil``,
``seg``, ``reg``, ``total``: means over the iterations since the previous line, averaged over
ranks), ``rectified`` (anchors whose tag was rectified, summed over the window and the ranks),
``sec_per_iter``, ``peak_mem_mb`` and ``mem_kind`` (``cuda`` = peak allocated by torch on the
GPU, ``rss`` = the process's peak resident memory on CPU). Validation lines (``"kind": "val"``)
have ``miou_cam``, ``miou_cam_aux``, ``miou_seg``, ``cls_f1`` and ``best_miou``. Other events
(``"kind": "event"``) record starts, skipped non-finite steps and stops. A resumed run first
drops the lines about iterations after its checkpoint, then redoes them.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """Peak memory so far: torch's peak allocation on a GPU, else the process's peak RSS (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return (rss / 2**20 if sys.platform == "darwin" else rss / 2**10), "rss"


def _clean(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """Appends JSON lines to ``RUN/metrics.jsonl`` and mirrors scalars to TensorBoard if available."""

    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self.tb = None

    @staticmethod
    def truncate_after(run_dir: Path, iteration: int) -> int:
        """Drop lines about iterations after ``iteration`` (a resumed run redoes them); return how many."""
        path = Path(run_dir) / "metrics.jsonl"
        if not path.is_file():
            return 0
        kept, dropped = [], 0
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                it = json.loads(line).get("iteration", 0)
            except (json.JSONDecodeError, AttributeError):
                dropped += 1  # a line cut short by a kill
                continue
            if isinstance(it, int) and it > iteration:
                dropped += 1
            else:
                kept.append(line)
        if dropped:
            from seco_deploy.data.io import atomic_write_text

            atomic_write_text(path, "".join(line + "\n" for line in kept))
        return dropped

    def write(self, kind: str, record: dict[str, Any]) -> None:
        line = {"kind": kind, "time": round(time.time(), 3), **{k: _clean(v) for k, v in record.items()}}
        self._fh.write(json.dumps(line) + "\n")
        self._fh.flush()
        if self.tb is not None and "iteration" in record:
            for key, value in line.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("iteration", "time"):
                    self.tb.add_scalar(f"{kind}/{key}", value, record["iteration"])

    def close(self) -> None:
        self._fh.close()
        if self.tb is not None:
            self.tb.close()


class ProgressBar:
    """A rich progress bar with ETA over iterations; silent when ``enabled`` is false (other ranks)."""

    def __init__(self, total: int, start: int, enabled: bool, console: Console) -> None:
        self.enabled = enabled
        self.console = console
        self.progress: Progress | None = None
        if enabled:
            self.progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
            )
            self.task = self.progress.add_task("train", total=total, completed=start, info="")

    def __enter__(self) -> ProgressBar:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, iteration: int, info: str = "") -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=iteration, info=info)

    def print(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, highlight=False)
