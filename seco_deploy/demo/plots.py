"""Training curves from ``RUN/metrics.jsonl`` as PNG (matplotlib, the optional extra ``report``).

``read_metrics(path)`` returns the ``train`` and ``val`` records (``read_chain(path)`` the ``chain``
ones); ``curves_png(train, val)`` draws every loss term, the learning rate and the validation
mIoUs over iterations, ``chain_png(chain)`` the chain's figures (crop-tag shares, seed context false
activation, rectification); both return None when matplotlib is not installed
(``have_matplotlib()`` says which).
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
from pathlib import Path
from typing import Any

from seco_deploy.train.step import TERMS

__all__ = ["LOSS_KEYS", "VAL_KEYS", "chain_png", "curves_png", "have_matplotlib", "read_chain", "read_metrics"]

LOSS_KEYS = TERMS
VAL_KEYS = ("miou_cam", "miou_cam_aux", "miou_seg")


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _records(path: str | Path, kinds: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    p = Path(path)
    if not p.is_file():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("kind") in out:
            out[rec["kind"]].append(rec)
    return out


def read_metrics(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(train records, val records)`` of a metrics.jsonl; unreadable lines are skipped."""
    found = _records(path, ("train", "val"))
    return found["train"], found["val"]


def read_chain(path: str | Path) -> list[dict[str, Any]]:
    """The ``chain`` records of a metrics.jsonl (:mod:`seco_deploy.train.chain`)."""
    return _records(path, ("chain",))["chain"]


def chain_png(chain: list[dict[str, Any]], coupled: list[str], dpi: int = 90) -> bytes | None:
    """Three panels over iterations: crop tags of foreground classes (right / context only / another
    class / nothing), the training CAM seeds' context false activation of the ``coupled`` classes, and
    the tags rectification removed (wrong / right); None without matplotlib or records."""
    if not have_matplotlib() or not chain:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    def series(get: Any) -> tuple[list[int], list[float]]:
        xs, ys = [], []
        for r in chain:
            try:
                v = get(r)
            except (KeyError, TypeError):
                continue
            if isinstance(v, (int, float)):
                xs.append(int(r["iteration"]))
                ys.append(float(v))
        return xs, ys

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), dpi=dpi)
    ax = axes[0]
    for key in ("right", "context", "other", "nothing"):
        xs, ys = series(lambda r, k=key: r["tags"]["all foreground"][k])
        if xs:
            ax.plot(xs, [100 * y for y in ys], label=key)
    ax.set_title("crops tagged with a class: what they hold (%)")
    ax.legend(fontsize=8)
    ax = axes[1]
    for cls in coupled:
        xs, ys = series(lambda r, c=cls: r["seeds"][c]["context_fa"])
        if xs:
            ax.plot(xs, [100 * y for y in ys], label=f"{cls}")
        xs, ys = series(lambda r, c=cls: r["tags"][c]["context"])
        if xs:
            ax.plot(xs, [100 * y for y in ys], linestyle="--", label=f"{cls} crops: context only")
    ax.set_title("training CAM seeds: context false activation (%)")
    ax.legend(fontsize=8)
    ax = axes[2]
    for key in ("removed_wrong", "removed_right"):
        xs, ys = series(lambda r, k=key: r["rectification"][k])
        if xs:
            ax.plot(xs, ys, label=key.replace("_", " "))
    ax.set_title("rectification: tags removed per logging window")
    ax.legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


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
