"""train/schedule.py: warm-up + poly values at hand-computed iterations, optimiser groups."""

from __future__ import annotations

import pytest
import torch

from seco_deploy.config import TrainConfig
from seco_deploy.train.schedule import WarmupPolySchedule, build_optimizer


def test_factor_at_hand_computed_steps() -> None:
    s = WarmupPolySchedule(warmup_iters=10, warmup_ratio=0.1, total_iters=100, power=0.5)
    assert s.factor(0) == pytest.approx(0.1)  # warm-up starts at the ratio
    assert s.factor(5) == pytest.approx(1 - 0.5 * 0.9)  # 0.55, halfway up
    assert s.factor(9) == pytest.approx(1 - 0.1 * 0.9)  # 0.91
    assert s.factor(10) == pytest.approx(0.9**0.5)  # poly from the warm-up end: (1 - 10/100)^0.5
    assert s.factor(75) == pytest.approx(0.5)  # (1 - 75/100)^0.5
    assert s.factor(99) == pytest.approx(0.1)  # (1/100)^0.5
    assert s.factor(100) == 0.0 and s.factor(500) == 0.0
    with pytest.raises(ValueError):
        s.factor(-1)


def test_reference_voc_schedule() -> None:
    s = WarmupPolySchedule.from_config(TrainConfig())  # 1500 warm-up, ratio 1e-6, 20000, power 0.9
    assert s.factor(0) == pytest.approx(1e-6)
    assert s.factor(750) == pytest.approx(0.5 + 0.5e-6)
    assert s.factor(10000) == pytest.approx(0.5**0.9)


def test_apply_scales_every_group_from_its_own_base() -> None:
    w1, w2 = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    cfg = TrainConfig(lr=1e-3, weight_decay=0.05, betas=(0.8, 0.9))
    opt = build_optimizer([{"params": [w1], "lr": 1e-3}, {"params": [w2], "lr": 1e-2}], cfg)
    assert opt.defaults["betas"] == (0.8, 0.9) and opt.defaults["weight_decay"] == 0.05
    s = WarmupPolySchedule(warmup_iters=4, warmup_ratio=0.0, total_iters=8, power=1.0)
    lr = s.apply(opt, 2)
    assert lr == pytest.approx(5e-4)
    assert opt.param_groups[1]["lr"] == pytest.approx(5e-3)
    s.apply(opt, 6)  # (1 - 6/8) = 0.25 of the base, not of the current value
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([2.5e-4, 2.5e-3])
