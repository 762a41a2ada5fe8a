"""Context / partner false activation on hand-made masks (values worked out in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seco_deploy.demo.cooccurrence import CooccurrenceMeter, CouplingSpec, couplings_from_synth, far_from_objects

BOAT, PERSON, HORSE = 1, 3, 4
WATER = 1
SPECS = [
    CouplingSpec("boat", BOAT, "context", "water", WATER),
    CouplingSpec("horse", HORSE, "partner", "person", PERSON),
    CouplingSpec("person", PERSON, "partner", "horse", HORSE),
]


def boat_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8x8: a 2x2 boat in the top-left corner, water on rows 4-7 (32 px); the prediction labels
    the boat and rows 4-5, columns 0-3 of the water (8 px) as boat."""
    gt = np.zeros((8, 8), np.uint8)
    gt[0:2, 0:2] = BOAT
    ctx = np.zeros((8, 8), np.uint8)
    ctx[4:8, :] = WATER
    pred = gt.copy()
    pred[4:6, 0:4] = BOAT
    return pred, gt, ctx


def test_far_from_objects_is_exact_euclidean() -> None:
    gt = np.zeros((8, 8), np.uint8)
    gt[0:2, 0:2] = BOAT
    far = far_from_objects(gt, 3.0)
    # (4, 0) and (4, 1) are exactly 3 px below the boat: not farther than 3; (4, 2) is sqrt(10) away.
    assert not far[4, 0] and not far[4, 1]
    assert far[4, 2] and far[5, 0]
    assert not far[0:2, 0:2].any()
    assert far_from_objects(np.zeros((4, 4), np.uint8), 1.0).all()  # no object: everything is far
    ignore = np.full((4, 4), 255, np.uint8)
    assert far_from_objects(ignore, 1.0).all()  # ignore pixels are not objects


def test_context_false_activation_all_and_far() -> None:
    meter = CooccurrenceMeter(SPECS, away_px=3.0)
    meter.update(*boat_scene())
    row = meter.compute()["boat"]
    assert row["images"] == 1
    assert row["fa"] == pytest.approx(8 / 32)  # 8 of the 32 water pixels are labelled boat
    # far water: 32 - 2 near pixels ((4,0), (4,1)); both near pixels are hits: 8 - 2 = 6 far hits
    assert row["fa_far"] == pytest.approx(6 / 30)
    assert row["far_pixels"] == 30


def test_images_without_the_class_do_not_count() -> None:
    meter = CooccurrenceMeter(SPECS, away_px=3.0)
    meter.update(*boat_scene())
    gt = np.zeros((8, 8), np.uint8)  # water, no boat; predicted all boat
    ctx = np.zeros((8, 8), np.uint8)
    ctx[4:, :] = WATER
    meter.update(np.full((8, 8), BOAT, np.uint8), gt, ctx)
    assert meter.compute()["boat"]["fa"] == pytest.approx(8 / 32)


def test_partner_false_activation() -> None:
    gt = np.zeros((6, 6), np.uint8)
    gt[3:6, 0:2] = HORSE  # 6 px
    gt[0:2, 0:2] = PERSON  # 4 px
    pred = gt.copy()
    pred[0, 0:2] = HORSE  # 2 of the 4 person pixels labelled horse
    pred[5, 0] = PERSON  # 1 of the 6 horse pixels labelled person
    meter = CooccurrenceMeter(SPECS)
    meter.update(pred, gt, None)
    out = meter.compute()
    assert out["horse"]["fa"] == pytest.approx(2 / 4)
    assert out["person"]["fa"] == pytest.approx(1 / 6)
    assert "fa_far" not in out["horse"]
    assert math.isnan(out["boat"]["fa"])  # no boat anywhere: undefined, not zero


def test_shape_mismatch_is_an_error() -> None:
    meter = CooccurrenceMeter(SPECS)
    with pytest.raises(ValueError, match="ground truth"):
        meter.update(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8), None)


def test_couplings_from_synth_info() -> None:
    info = {
        "classes": ["background", "boat", "train", "person", "horse"],
        "context_of": {"boat": "water", "train": "rails"},
        "context_index": {"water": 1, "rails": 2},
        "pairs": [["horse", "person"]],
    }
    specs = {s.name: s for s in couplings_from_synth(info)}
    assert specs["boat"] == CouplingSpec("boat", 1, "context", "water", 1)
    assert specs["train"].other == 2
    assert specs["horse"] == CouplingSpec("horse", 4, "partner", "person", 3)
    assert specs["person"].other == 4
