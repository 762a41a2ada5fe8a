"""Predict's defaults (threads, decoding workers) and the CPU argmax of its masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seco_deploy.infer.options import default_threads, default_workers
from seco_deploy.infer.refine import argmax_uint8


def test_default_workers_leave_small_machines_to_the_model() -> None:
    assert [default_workers(c) for c in (1, 2, 3, 4, 8, 64)] == [0, 0, 1, 2, 4, 4]


def test_default_threads_are_pytorchs_choice() -> None:
    assert default_threads() == torch.get_num_threads() >= 1


def test_argmax_uint8_matches_argmax_with_ties_to_the_lowest_index() -> None:
    scores = torch.tensor([[[0.0, 2.0], [1.0, 1.0]],
                           [[0.0, 3.0], [1.0, 0.5]],
                           [[5.0, 3.0], [1.0, 0.5]]])  # ties: (0,1) between 1 and 2, (1,0) between all
    assert argmax_uint8(scores).tolist() == [[2, 1], [0, 0]]
    random = torch.randn(7, 33, 20).round(decimals=1)  # rounding makes ties common
    got = argmax_uint8(random)
    assert got.dtype == np.uint8 and (got == random.numpy().argmax(0)).all()


def test_argmax_uint8_over_a_batch_matches_argmax_over_the_channel_axis() -> None:
    scores = torch.randn(3, 5, 9, 7).round(decimals=1)
    got = argmax_uint8(scores)
    assert got.shape == (3, 9, 7) and (got == scores.numpy().argmax(1)).all()
    with pytest.raises(ValueError, match=r"\(K, H, W\) or \(N, K, H, W\)"):
        argmax_uint8(torch.zeros(4, 4))
