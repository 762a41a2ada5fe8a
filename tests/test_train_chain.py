"""The chain's counts on a hand-made case: seeds, context false activation, ROI, crop tags, rectification."""

from __future__ import annotations

import torch

from seco_deploy.train.chain import ChainSpec, chain_counts, chain_figures

SPEC = ChainSpec(classes=("background", "boat", "horse"), crop_size=2, bkg_thre=0.5, context_of={1: 1})


def _case() -> tuple[dict, dict]:
    gt = torch.zeros(1, 4, 4, dtype=torch.uint8)
    gt[0, :2, :2] = 1  # a boat in the top-left 2x2
    context = torch.zeros(1, 4, 4, dtype=torch.uint8)
    context[0, 2:, :2] = 1  # water under it
    cam = torch.zeros(1, 2, 4, 4)
    cam[0, 0, :, :2] = 0.9  # the boat CAM lights the boat and the water
    batch = {"mask": gt, "context": context, "tags": torch.tensor([[1.0, 1.0]])}
    roi = torch.zeros(1, 4, 4, dtype=torch.long)
    roi[0, :2, :2] = 1
    roi[0, 2:, :2] = 1  # the ROI calls the water boat as well
    roi[0, :, 3] = -1  # an uncertain background column
    probe = {
        "cam": cam,
        "roi": roi,
        # crops: boat (right), water (context only), bottom-right tagged horse (nothing), top-right background
        "crop_y0": torch.tensor([[0, 2, 2, 0]]),
        "crop_x0": torch.tensor([[0, 0, 2, 2]]),
        "crop_tags": torch.tensor([[1, 1, 2, 0]]),
        # after rectification: the two global views, then the crops; the water crop's wrong tag is removed
        "anchor_tags": torch.tensor([[-1, -1, 1, -1, 2, 0]]),
    }
    return batch, probe


def test_chain_counts_and_figures() -> None:
    batch, probe = _case()
    figures = chain_figures(SPEC, chain_counts(SPEC, batch, probe))
    boat = figures["seeds"]["boat"]
    assert boat == {"precision": 0.5, "recall": 1.0, "context_fa": 1.0}  # 8 pixels labelled boat, 4 of them boat
    assert figures["roi"]["boat"]["precision"] == 0.5 and figures["roi"]["uncertain_fg"] == 0.0
    tags = figures["tags"]
    assert tags["boat"] == {"crops": 2, "right": 0.5, "context": 0.5, "other": 0.0, "nothing": 0.0}
    assert tags["horse"]["crops"] == 1 and tags["horse"]["nothing"] == 1.0
    assert tags["background"] == {"crops": 1, "right": 1.0}
    assert tags["all foreground"]["crops"] == 3 and tags["all foreground"]["right"] == round(1 / 3, 4)
    assert figures["rectification"] == {"removed_wrong": 1, "removed_right": 0}


def test_counts_sum_over_iterations() -> None:
    batch, probe = _case()
    once = chain_counts(SPEC, batch, probe)
    twice = {k: v + v for k, v in once.items()}
    assert chain_figures(SPEC, twice)["tags"]["boat"]["crops"] == 4
    assert chain_figures(SPEC, twice)["seeds"] == chain_figures(SPEC, once)["seeds"]


def test_no_masks_no_counts() -> None:
    batch, probe = _case()
    batch["mask"] = torch.full_like(batch["mask"], 255)
    assert chain_counts(SPEC, batch, probe) == {}
