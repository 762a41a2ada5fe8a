"""benchmarks/false_pixels.py: where a coupled class's false pixels lie, on a hand-made image."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "false_pixels.py"


def _module():
    spec = importlib.util.spec_from_file_location("false_pixels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_false_pixels_splits_wrong_pixels_by_where_they_lie() -> None:
    # 6 x 4 image: rows 0-1 sky, rows 2-5 water (context 1); the boat (class 1) at rows 3-4, cols 1-2
    gt = np.zeros((6, 4), np.uint8)
    gt[3:5, 1:3] = 1
    context = np.zeros((6, 4), np.uint8)
    context[2:] = 1
    context[3:5, 1:3] = 0
    pred = np.zeros((6, 4), np.uint8)
    pred[3:5, 1:3] = 1  # 4 right
    pred[0, :3] = 1  # 3 wrong in the sky, above the water
    pred[5, 0] = 1  # 1 wrong on the water
    pred[3, 0] = 2  # another class: not counted for class 1
    counts = _module().false_pixels(pred, gt, context, cls=1, ctx=1)
    assert counts == {"right": 4, "wrong": 4, "on_context": 1, "above": 3}
    assert _module().false_pixels(pred, gt, np.zeros_like(context), cls=1, ctx=1)["above"] == 0  # no water
