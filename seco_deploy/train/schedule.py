"""Learning-rate schedule: linear warm-up, then polynomial decay (method §2.11).

With ``s`` the number of optimiser steps already taken (0 for the first iteration), ``W`` the
warm-up length, ``r`` the warm-up ratio, ``T`` the total iterations and ``p`` the power, every
parameter group's learning rate is ``base_lr * f(s)`` with

    f(s) = 1 - (1 - s / W) * (1 - r)      for s < W   (r at s = 0, rising linearly towards 1)
    f(s) = (1 - s / T) ** p               for W <= s < T
    f(s) = 0                              for s >= T

which is the reference implementation's ``PolyWarmupAdamW``. The schedule is a pure function
of ``s``, so a resumed run needs only the iteration count to continue it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seco_deploy.config import TrainConfig


@dataclass(frozen=True)
class WarmupPolySchedule:
    """``f(s)`` above; ``apply`` writes ``initial_lr * f(s)`` into every optimiser group."""

    warmup_iters: int
    warmup_ratio: float
    total_iters: int
    power: float

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> WarmupPolySchedule:
        return cls(cfg.warmup_iters, cfg.warmup_ratio, cfg.iters, cfg.poly_power)

    def factor(self, step: int) -> float:
        """Multiplier of the base learning rate for the optimiser step with index ``step`` (0-based)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if step < self.warmup_iters:
            return 1.0 - (1.0 - step / self.warmup_iters) * (1.0 - self.warmup_ratio)
        if step < self.total_iters:
            return (1.0 - step / self.total_iters) ** self.power
        return 0.0

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set each group's ``lr`` to ``initial_lr * factor(step)``; return the first group's lr."""
        f = self.factor(step)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * f
        return optimizer.param_groups[0]["lr"]


def build_optimizer(param_groups: list[dict], cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over ``param_groups`` (each with its own ``lr``), betas/weight decay from ``cfg``.

    Each group's configured ``lr`` is kept as ``initial_lr``, the base that the schedule scales.
    """
    groups = []
    for group in param_groups:
        group = dict(group)
        group.setdefault("lr", cfg.lr)
        group["initial_lr"] = group["lr"]
        groups.append(group)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, eps=1e-8)
