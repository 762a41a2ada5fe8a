"""The training iteration (method §2.1-§2.10) on the ``test`` preset: gradients, schedule, ablations."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from _model_helpers import config_with, make_batch, single_thread  # noqa: F401

from seco_deploy.model.network import SeCoNet
from seco_deploy.train.step import TERMS, TrainingStep

NUM_CLASSES = 3
SINGLE = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])


def _setup(labels: torch.Tensor = SINGLE, **model_overrides):
    cfg = config_with(**model_overrides)
    torch.manual_seed(0)
    net = SeCoNet(cfg.model, NUM_CLASSES)
    batch = make_batch(cfg, NUM_CLASSES, batch=labels.shape[0], labels=labels)
    return cfg, net, TrainingStep(net, cfg.model, cfg.train, cfg.data), batch


def _count_encoder_calls(net: SeCoNet) -> dict[str, int]:
    counts = {"student": 0, "teacher": 0}
    for name in ("encoder", "teacher_encoder"):
        module = getattr(net, name, None)
        if module is None:
            continue
        original = module.tokens
        key = "student" if name == "encoder" else "teacher"

        def counted(x, _orig=original, _key=key):
            counts[_key] += 1
            return _orig(x)

        module.tokens = counted
    return counts


def test_full_step_past_seg_start_gives_every_used_parameter_a_finite_gradient() -> None:
    cfg, net, step, batch = _setup()
    it = cfg.train.seg_start + 1
    result = step(batch, it, torch.Generator().manual_seed(0))
    result.loss.backward()
    assert set(result.terms) == set(TERMS)
    for name in ("cls", "cls_aux", "ptc", "lil", "lig", "seg"):
        assert math.isfinite(result.terms[name].item()) and result.terms[name].item() > 0, name
    assert result.terms["reg"].item() < 0  # an energy: -sum of non-negative terms
    w = cfg.train
    expected = sum(
        getattr(w, f"w_{k}", 1.0) * result.terms[k] for k in ("cls", "cls_aux", "ptc", "lil", "lig", "seg", "reg")
    )
    assert torch.allclose(result.terms["total"], expected)
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    bad = [n for n, p in net.named_parameters() if p.requires_grad and not torch.isfinite(p.grad).all()]
    assert not bad
    assert all(p.grad is None for p in net.teacher_parameters())
    assert int(result.stats["anchors"]) > 0


def test_schedule_phases() -> None:
    cfg, net, step, batch = _setup()
    first = step(batch, 0, torch.Generator().manual_seed(0))
    for k in ("lil", "lig", "seg", "reg"):
        assert first.terms[k].item() == 0.0
    t = first.terms
    assert torch.allclose(t["total"], t["cls"] + t["cls_aux"] + cfg.train.w_ptc * t["ptc"])
    mid = step(batch, cfg.train.contrast_start + 1, torch.Generator().manual_seed(0))
    assert mid.terms["lil"].item() > 0 and mid.terms["seg"].item() == 0.0
    assert step.reservoir_on(0, 4)  # queue 64 / 16 keys: the queue fills in 4 steps before contrast


def test_reservoir_starts_just_in_time_to_fill_the_queue() -> None:
    cfg = config_with()
    train = dataclasses.replace(cfg.train, contrast_start=1000)
    model = dataclasses.replace(cfg.model, queue_size=4608, num_local_crops=10)
    net = SeCoNet(dataclasses.replace(cfg.model, queue_size=4608), NUM_CLASSES)
    step = TrainingStep(net, model, train, cfg.data)
    # 4 images x (10 crops + 2 views) = 48 keys per step: 96 steps refill 4608 rows
    assert not step.reservoir_on(904, 4) and step.reservoir_on(905, 4)


def test_empty_and_single_class_batches_give_finite_losses() -> None:
    for labels in (torch.zeros(4, NUM_CLASSES), torch.tensor([[0.0, 1.0, 0.0]] * 4)):
        cfg, net, step, batch = _setup(labels)
        result = step(batch, cfg.train.seg_start + 1, torch.Generator().manual_seed(0))
        result.loss.backward()
        assert all(math.isfinite(v.item()) for v in result.terms.values())
        assert abs(result.terms["lig"].item()) < 1e-6  # no class anchors, or one class only
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_step_is_reproducible_under_a_generator() -> None:
    values = []
    for _ in range(2):
        cfg, net, step, batch = _setup()
        values.append(step(batch, cfg.train.seg_start + 1, torch.Generator().manual_seed(5)).terms)
    assert all(torch.equal(values[0][k], values[1][k]) for k in TERMS)


def test_baseline_skips_crop_and_teacher_passes() -> None:
    off = dict(use_decomposition=False, use_lil=False, use_lig=False, use_rectification=False, use_aux_roi=False)
    cfg, net, step, batch = _setup(**off)
    counts = _count_encoder_calls(net)
    result = step(batch, cfg.train.seg_start + 1)
    result.loss.backward()
    assert counts == {"student": 1 + len(cfg.model.cam_scales), "teacher": 0}
    assert result.terms["lil"].item() == 0.0 and result.terms["lig"].item() == 0.0
    assert result.terms["seg"].item() > 0
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)

    cfg, net, step, batch = _setup()
    counts = _count_encoder_calls(net)
    step(batch, cfg.train.seg_start + 1, torch.Generator().manual_seed(0))
    # main + global view in one pass, the crops, and one pass per CAM scale (scale 1: the flip only)
    assert counts == {"student": 2 + len(cfg.model.cam_scales), "teacher": 1}


@pytest.mark.parametrize(
    "overrides",
    [
        {"use_decomposition": False},
        {"use_lil": False},
        {"use_lig": False, "use_rectification": False},
        {"use_aux_roi": False},
        {"use_lil": False, "use_rectification": False},  # LiG only: no key pool, no teacher
    ],
)
def test_ablations_run(overrides) -> None:
    cfg, net, step, batch = _setup(**overrides)
    result = step(batch, cfg.train.seg_start + 1, torch.Generator().manual_seed(0))
    result.loss.backward()
    assert math.isfinite(result.loss.item())
    if overrides.get("use_lil") is False:
        assert result.terms["lil"].item() == 0.0


def test_bf16_autocast_keeps_losses_in_float32() -> None:
    cfg, net, step, batch = _setup()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = step(batch, cfg.train.seg_start + 1, torch.Generator().manual_seed(0))
    result.loss.backward()
    assert all(v.dtype == torch.float32 and math.isfinite(v.item()) for v in result.terms.values())
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
