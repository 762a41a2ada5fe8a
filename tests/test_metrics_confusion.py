"""metrics.py: confusion matrix, IoU/precision/recall/FP:TP and F1 against hand-computed figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seco_deploy.metrics import ConfusionMatrix, multilabel_f1, scores_from_matrix

# Two hand-made image pairs over 3 classes (0 background, 1, 2); 255 is ignore in GT and
# "no decision" in the prediction.
GT1 = np.array([[0, 0, 1, 1], [0, 0, 2, 255]])
PRED1 = np.array([[0, 1, 1, 1], [0, 0, 2, 2]])
GT2 = np.array([[1, 1], [1, 2]])
PRED2 = np.array([[1, 255], [2, 2]])
# Counted by hand: rows = GT class, columns = predicted 0, 1, 2, none.
EXPECTED = np.array([[3, 1, 0, 0], [0, 3, 1, 1], [0, 0, 2, 0]])


def test_matrix_counts_match_hand_count() -> None:
    cm = ConfusionMatrix(3)
    cm.update(GT1, PRED1)
    cm.update(torch.from_numpy(GT2), torch.from_numpy(PRED2))
    np.testing.assert_array_equal(cm.matrix, EXPECTED)


def test_scores_match_hand_computed_figures() -> None:
    s = scores_from_matrix(EXPECTED)
    # TP = 3, 3, 2; GT = 4, 5, 2; predicted = 3, 4, 3.
    np.testing.assert_allclose(s["iou"], [3 / 4, 3 / 6, 2 / 3])
    np.testing.assert_allclose(s["precision"], [1.0, 3 / 4, 2 / 3])
    np.testing.assert_allclose(s["recall"], [3 / 4, 3 / 5, 1.0])
    np.testing.assert_allclose(s["fp_tp"], [0.0, 1 / 3, 1 / 2])
    assert s["miou"] == pytest.approx((3 / 4 + 1 / 2 + 2 / 3) / 3)
    assert s["pixel_acc"] == pytest.approx(8 / 11)


def test_miou_skips_classes_absent_from_ground_truth() -> None:
    cm = ConfusionMatrix(4)
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 3, 1, 1]])  # class 3 predicted but never in GT; class 2 nowhere
    cm.update(gt, pred)
    s = cm.compute()
    assert s["present"] == [True, True, False, False]
    assert math.isnan(s["iou"][2]) and s["iou"][3] == 0.0
    assert math.isinf(s["fp_tp"][3])
    assert s["miou"] == pytest.approx((1 / 2 + 1.0) / 2)


def test_shape_mismatch_and_merge() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="pixels"):
        cm.update(np.zeros((2, 2)), np.zeros((2, 3)))
    other = ConfusionMatrix(3)
    other.update(GT1, PRED1)
    cm.merge(other)
    cm.update(GT2, PRED2)
    np.testing.assert_array_equal(cm.matrix, EXPECTED)


def test_multilabel_f1_per_image() -> None:
    labels = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    preds = np.array([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    # image 0: TP 1, FP 1, FN 1 -> 2/4; image 1: perfect; image 2: nothing to find, nothing claimed.
    np.testing.assert_allclose(multilabel_f1(labels, preds), [0.5, 1.0, 1.0])
