"""benchmarks/cam_ceiling.py: the mIoU of a perfect CAM on the token grid, on hand-made masks."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cam_ceiling.py"


def _module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("cam_ceiling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_a_block_on_the_grid_is_kept_and_a_thin_line_is_lost() -> None:
    ceiling = _module().ceiling_label
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 1  # a 32 px square: 2 x 2 tokens of 16 px at base 64
    mask[2:4, :] = 2  # a 2 px line: never a majority of any token
    label = ceiling(mask, 3, 64, (1.0,), 16)
    assert (label[24:40, 24:40] == 1).all()  # the square's inside survives bilinear upsampling
    assert not (label == 2).any()
    fine = ceiling(mask, 3, 512, (1.0,), 16)  # 32 x 32 tokens of 2 px each: the line is resolved
    assert (fine[2:4, 4:60] == 2).mean() > 0.9


def test_ignore_pixels_do_not_vote_and_scales_add_grids() -> None:
    ceiling = _module().ceiling_label
    mask = np.full((32, 32), 255, np.uint8)
    mask[:, :16] = 1
    label = ceiling(mask, 2, 32, (1.0, 2.0), 16)
    assert label.shape == (32, 32) and (label[:, :12] == 1).all()


def test_setting_parser() -> None:
    parse = _module().parse_setting
    assert parse("160:1.0,1.4") == (160, (1.0, 1.4))
    assert parse("224") == (224, (1.0,))
    for bad in ("x:1", "160:0", "160:a"):
        with pytest.raises(argparse.ArgumentTypeError, match="--setting"):
            parse(bad)
