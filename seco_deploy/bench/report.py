"""The benchmark's rows: one per format, as a table (:func:`table_rows`), Markdown and JSON.

A row is ``measured`` (figures), ``unavailable`` (this machine cannot run the format; ``reason``
says why: a runtime not installed, no GPU) or ``failed`` (the format should run here but its
export or its worker did not finish; ``reason`` says how, e.g. ``crashed: signal 11 (SIGSEGV)``).
Columns (see :mod:`seco_deploy.bench.measure` for how each is measured): mIoU against the masks,
pixel agreement with PyTorch fp32, images/s end to end and for the model alone (and the model's
achieved GFLOP/s: its images/s x the FLOPs per image counted on the PyTorch format), batch-1 latency
p50 / p95, peak resident memory (and GPU memory on a GPU), the model file's size and the seconds
its export took (``cached`` when it was reused).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["COLUMNS", "BenchmarkResult", "Row", "table_rows", "to_markdown"]


@dataclass
class Row:
    """One format's line of the table."""

    format: str
    label: str
    status: str  # measured | unavailable | failed
    reason: str = ""
    miou: float | None = None
    agreement: float | None = None
    e2e_ips: float | None = None
    model_ips: float | None = None
    model_gflops: float | None = None  # model_ips x the FLOPs per image PyTorch counted
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    peak_rss_mb: float | None = None
    gpu_mb: float | None = None
    file_mb: float | None = None
    export_seconds: float | None = None
    export_cached: bool = False
    parity_passed: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def note(self) -> str:
        """What the reader must know beside the figures (the reason, a failed parity check)."""
        if self.status != "measured":
            return self.reason
        notes = [self.reason] if self.reason else []
        if self.parity_passed is False:
            notes.append("export parity check FAILED: do not deploy")
        return "; ".join(notes)


@dataclass
class BenchmarkResult:
    """Every row, in table order, and what they were measured on."""

    rows: list[Row]
    environment: dict[str, Any]
    settings: dict[str, Any]

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.status == "failed"]

    def to_json(self) -> str:
        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        payload = {"environment": self.environment, "settings": self.settings,
                   "rows": [asdict(r) | {"note": r.note} for r in self.rows]}
        return json.dumps(clean(payload), indent=2) + "\n"


COLUMNS = ("format", "mIoU", "agree", "img/s", "model img/s", "GFLOP/s", "p50 ms", "p95 ms", "peak RSS MB", "file MB",
           "export s", "note")


def _num(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def table_rows(result: BenchmarkResult) -> list[list[str]]:
    """The cells of every row, as :data:`COLUMNS` (strings; ``-`` where a figure does not apply)."""
    out = []
    for r in result.rows:
        if r.status != "measured":
            out.append([r.format, *(["-"] * (len(COLUMNS) - 2)), f"{r.status}: {r.note}"])
            continue
        rss = _num(r.peak_rss_mb, 0) + (f" (GPU {_num(r.gpu_mb, 0)})" if r.gpu_mb is not None else "")
        export = _num(r.export_seconds, 1) + (" (cached)" if r.export_cached else "")
        out.append([
            r.format, _num(r.miou, 2), "-" if r.agreement is None else f"{100 * r.agreement:.2f}%",
            _num(r.e2e_ips, 2), _num(r.model_ips, 2), _num(r.model_gflops, 1), _num(r.latency_p50_ms, 1),
            _num(r.latency_p95_ms, 1), rss, _num(r.file_mb, 1), export, r.note,
        ])
    return out


def to_markdown(result: BenchmarkResult) -> str:
    """A Markdown page: what was measured on what, then the table."""
    env, settings = result.environment, result.settings
    lines = ["# seco benchmark", ""]
    lines += [f"- {key}: {value}" for key, value in settings.items()]
    lines += [f"- {key}: {value}" for key, value in env.items()]
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for cells in table_rows(result):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "img/s: end to end (decode, TTA, argmax, PNG writing); model img/s: the model's forward alone on "
              "the same inputs; GFLOP/s: the model's, its images/s x the FLOPs per image counted on the PyTorch "
              "format (- when no PyTorch format ran); p50/p95: batch-1 latency without decode and write; agree: pixel "
              "agreement of the masks with PyTorch fp32; export s: seconds the export took ((cached): the file was "
              "reused, the seconds are those of its export).", ""]
    return "\n".join(lines)
