"""Training curves from ``RUN/metrics.jsonl`` as PNG (matplotlib, the optional extra ``report``).

``read_metrics(path)`` returns the ``train`` and ``val`` records; ``curves_png(train, val)``
draws every loss term, the learning rate and the validation mIoUs over iterations, or returns
None when matplotlib is not installed (``have_matplotlib()`` says which).
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
from pathlib import Path
from typing import Any

__all__ = ["LOSS_KEYS", "VAL_KEYS", "curves_png", "have_matplotlib", "read_metrics"]

LOSS_KEYS = ("cls", "cls_aux", "ptc", "lig", "lil", "seg", "reg", "total")
VAL_KEYS = ("miou_cam", "miou_cam_aux", "miou_seg")


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def read_metrics(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(train records, val records)`` of a metrics.jsonl; unreadable lines are skipped."""
    train, val = [], []
    p = Path(path)
    if not p.is_file():
        return train, val
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("kind") == "train":
            train.append(rec)
        elif rec.get("kind") == "val":
            val.append(rec)
    return train, val


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and not math.isnan(v):
            xs.append(int(r["iteration"]))
            ys.append(float(v))
    return xs, ys


def curves_png(train: list[dict[str, Any]], val: list[dict[str, Any]], dpi: int = 90) -> bytes | None:
    """Three panels (loss terms, learning rate, validation mIoU) as PNG; None without matplotlib."""
    if not have_matplotlib():
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), dpi=dpi)
    ax = axes[0]
    for key in LOSS_KEYS:
        xs, ys = _series(train, key)
        if xs and any(y != 0 for y in ys):
            ax.plot(xs, ys, label=key, linewidth=2.0 if key == "total" else 1.2)
    ax.set_title("loss terms (weighted sum = total)")
    ax.set_xlabel("iteration")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[1]
    xs, ys = _series(train, "lr")
    ax.plot(xs, ys, color="tab:purple")
    ax.set_title("learning rate")
    ax.set_xlabel("iteration")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)
    ax = axes[2]
    for key, label in zip(VAL_KEYS, ("CAM", "aux CAM", "decoder"), strict=True):
        xs, ys = _series(val, key)
        if xs:
            ax.plot(xs, [100 * y for y in ys], marker="o", label=label)
    ax.set_title("validation mIoU (%)")
    ax.set_xlabel("iteration")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
