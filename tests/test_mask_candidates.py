"""The classes that can win a mask (:func:`~seco_deploy.infer.tta.mask_candidates`) and the masks made
from them alone (:func:`~seco_deploy.infer.tta.fused_masks`)."""

from __future__ import annotations

import torch

from seco_deploy.infer.refine import argmax_uint8
from seco_deploy.infer.tta import fuse_seg, fused_masks, mask_candidates


def test_a_class_below_another_at_every_corner_is_ruled_out_and_a_crossing_one_kept() -> None:
    # (1, 3, 2, 2): class 0 is 1 everywhere; class 1 is 3 in one corner (it wins near there);
    # class 2 is 0.5 everywhere, below class 0 at every corner of the one cell.
    seg = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]], [[3.0, 0.0], [0.0, 0.0]], [[0.5, 0.5], [0.5, 0.5]]]])
    assert mask_candidates([seg], slice(0, 1)).tolist() == [[True, True, False]]


def test_a_class_that_wins_only_at_another_scale_is_kept() -> None:
    low = torch.zeros(1, 2, 2, 2)
    low[:, 0] = 1.0  # scale 1: background everywhere
    high = torch.zeros(1, 2, 3, 3)
    high[:, 1, 1, 1] = 5.0  # scale 2: class 1 in the middle
    assert mask_candidates([low], slice(0, 1)).tolist() == [[True, False]]
    assert mask_candidates([low, high], slice(0, 1)).tolist() == [[True, True]]


def test_one_candidate_fills_the_mask_with_it() -> None:
    seg = torch.zeros(2, 4, 3, 3)
    seg[0, 0] = 7.0
    seg[1, 2] = 7.0
    masks = fused_masks([seg], slice(0, 2), (5, 6))
    assert masks.dtype.name == "uint8" and masks.shape == (2, 5, 6)
    assert (masks[0] == 0).all() and (masks[1] == 2).all()


def test_masks_from_the_candidates_equal_the_argmax_over_every_class() -> None:
    """Random logits, some with most classes far below the leader (the per-image path), some
    alike (the whole-chunk path); one or two scales of grids down to one row or column,
    upsampled and downsampled; chunks that start inside the batch."""
    generator = torch.Generator().manual_seed(0)
    pruned = full = 0
    for trial in range(150):
        k = int(torch.randint(2, 22, (1,), generator=generator))
        n = int(torch.randint(1, 5, (1,), generator=generator))
        size = tuple(int(v) for v in torch.randint(3, 50, (2,), generator=generator))
        segs = []
        for _ in range(int(torch.randint(1, 3, (1,), generator=generator))):
            h, w = (int(v) for v in torch.randint(1, 9, (2,), generator=generator))
            seg = torch.randn(n, k, h, w, generator=generator)
            if trial % 3:
                seg[:, 1:] -= 6 * torch.rand(1, k - 1, 1, 1, generator=generator)
            segs.append(seg)
        images = slice(n // 2, n)
        expected = argmax_uint8(fuse_seg(segs, images, size))
        assert (fused_masks(segs, images, size) == expected).all()
        alive = mask_candidates(segs, images)
        pruned += int(alive.sum()) * 2 <= alive.numel()
        full += int(alive.sum()) * 2 > alive.numel()
    assert pruned > 30 and full > 30  # both paths were exercised
