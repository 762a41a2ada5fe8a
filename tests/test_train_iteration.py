"""One training iteration outside the trainer: precision choice, the step applied or skipped."""

from __future__ import annotations

import math

import pytest
import torch
from _model_helpers import config_with, make_batch, single_thread  # noqa: F401

from seco_deploy.config import ConfigError
from seco_deploy.model.network import SeCoNet
from seco_deploy.runtime.device import bf16_is_fast
from seco_deploy.runtime.errors import MissingRuntimeError
from seco_deploy.train.iteration import Iteration, resolve_amp
from seco_deploy.train.schedule import WarmupPolySchedule, build_optimizer
from seco_deploy.train.step import TrainingStep


def test_resolve_amp() -> None:
    cpu = torch.device("cpu")
    assert resolve_amp("off", cpu) is None and resolve_amp("bf16", cpu) == torch.bfloat16
    assert resolve_amp("auto", cpu) == (torch.bfloat16 if bf16_is_fast(cpu) else None)
    with pytest.raises(MissingRuntimeError, match="CUDA"):
        resolve_amp("fp16", cpu)
    with pytest.raises(ConfigError, match="train.amp"):
        resolve_amp("fp8", cpu)


def _iteration():
    cfg = config_with()
    torch.manual_seed(0)
    net = SeCoNet(cfg.model, 3)
    step = TrainingStep(net, cfg.model, cfg.train, cfg.data)
    run = Iteration(step, build_optimizer(net.param_groups(cfg.train), cfg.train),
                    WarmupPolySchedule.from_config(cfg.train))
    return cfg, net, step, run, make_batch(cfg, 3, batch=4)


def test_an_iteration_updates_the_weights_and_the_queue() -> None:
    cfg, net, _, run, batch = _iteration()
    before = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}
    queue = net.queue.clone()
    out = run(batch, cfg.train.seg_start + 2)
    assert out.applied and not out.stop and math.isfinite(float(out.terms["total"]))
    assert any(not torch.equal(before[n], p) for n, p in net.named_parameters() if n in before)
    assert not torch.equal(queue, net.queue)
    assert out.lr == pytest.approx(cfg.train.lr * run.schedule.factor(cfg.train.seg_start + 1))


def test_a_non_finite_iteration_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, net, step, run, batch = _iteration()
    original = TrainingStep.forward

    def poisoned(self, batch, iteration, generator=None):  # type: ignore[no-untyped-def]
        out = original(self, batch, iteration, generator)
        out.loss = out.loss + torch.tensor(math.nan)
        out.terms["seg"] = torch.tensor(math.nan)
        return out

    monkeypatch.setattr(TrainingStep, "forward", poisoned)
    weights = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    out = run(batch, cfg.train.seg_start + 2, want_stop=True)
    assert out.nonfinite == ["seg"] and out.stop and not out.applied
    assert all(torch.equal(weights[n], p) for n, p in net.named_parameters() if n in weights)
    assert all(torch.equal(buffers[n], b) for n, b in net.named_buffers())
    assert all(p.grad is None for p in net.parameters())
