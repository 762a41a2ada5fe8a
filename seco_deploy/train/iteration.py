"""One optimisation iteration: the training step's forward, the non-finite guard, backward, AdamW.

``Iteration(step_module, optimizer, schedule, ...)(batch, it) -> IterationOutcome``, with ``it``
the 1-based iteration number, does in order:

1. the learning rate of :class:`~seco_deploy.train.schedule.WarmupPolySchedule` at step ``it - 1``;
2. a copy of the network's buffers (prototypes, queue), so a skipped step leaves them as they were;
3. the forward of :class:`~seco_deploy.train.step.TrainingStep` (through DDP when wrapped) at
   iteration ``it - 1`` (the step counts from 0), under autocast when ``amp_dtype`` is set;
4. one collective across ranks: is any loss term NaN/inf, does any rank want to stop;
5. backward (through the fp16 ``GradScaler`` when there is one); with non-finite losses the total
   is multiplied by 0 first so every rank still joins DDP's gradient reduction; without a scaler
   the gradients are checked too;
6. when everything was finite, the AdamW step; else the gradients are dropped and the buffers
   restored (the outcome names the non-finite terms; the caller decides when to give up).

The trainer, the demo's speed calibration and ``benchmarks/train_step.py`` all run iterations
through this class, so what they time is what training does.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch

from seco_deploy.config import ConfigError
from seco_deploy.runtime.device import bf16_is_fast
from seco_deploy.runtime.errors import MissingRuntimeError
from seco_deploy.train.distributed import DistContext, all_reduce_
from seco_deploy.train.schedule import WarmupPolySchedule
from seco_deploy.train.step import StepResult, unwrap

__all__ = ["Iteration", "IterationOutcome", "resolve_amp"]


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """``train.amp`` on ``device`` -> the autocast dtype (None: fp32). ``auto`` is bf16 where the
    device computes it natively (:func:`seco_deploy.runtime.device.bf16_is_fast`), else fp32;
    ``fp16`` needs a CUDA GPU (it uses a grad scaler)."""
    if amp == "auto":
        return torch.bfloat16 if bf16_is_fast(device) else None
    if amp == "off":
        return None
    if amp == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("'train.amp' = bf16, but this GPU has no bf16 support; use --amp fp16 or --amp off")
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise MissingRuntimeError("--amp fp16 needs a CUDA GPU (it uses a grad scaler); on CPU use --amp bf16")
        return torch.float16
    raise ConfigError(f"'train.amp' = {amp!r}; choose one of off, bf16, fp16, auto")


@dataclass
class IterationOutcome:
    """``terms`` float32 0-dim tensors (detached, this rank's); ``stats`` of the step; ``nonfinite``
    the names of the non-finite terms (empty when the step was applied); ``stop`` whether any rank
    asked to stop; ``lr`` the base learning rate used; ``probe`` the step's (StepResult.probe)."""

    terms: dict[str, torch.Tensor]
    stats: dict[str, torch.Tensor]
    lr: float
    nonfinite: list[str] = field(default_factory=list)
    stop: bool = False
    probe: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def applied(self) -> bool:
        return not self.nonfinite


class Iteration:
    """See the module docstring. ``step_module`` is a TrainingStep or a DDP wrapper around one."""

    def __init__(
        self,
        step_module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: WarmupPolySchedule,
        scaler: torch.amp.GradScaler | None = None,
        amp_dtype: torch.dtype | None = None,
        ctx: DistContext | None = None,
    ) -> None:
        self.step_module = step_module
        self.net = unwrap(step_module).net
        self.optimizer = optimizer
        self.schedule = schedule
        self.scaler = scaler
        self.amp_dtype = amp_dtype
        self.ctx = ctx if ctx is not None else DistContext(device=next(self.net.parameters()).device)
        self.buffers = dict(self.net.named_buffers())
        self.saved = {name: b.clone() for name, b in self.buffers.items()}
        self.term_names: list[str] | None = None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=self.amp_dtype)

    def __call__(self, batch: dict[str, Any], it: int, want_stop: bool = False,
                 generator: torch.Generator | None = None) -> IterationOutcome:
        lr = self.schedule.apply(self.optimizer, it - 1)
        for name, b in self.buffers.items():
            self.saved[name].copy_(b)
        with self.autocast():
            out: StepResult = self.step_module(batch, it - 1, generator)
        terms = {k: v.detach().float() for k, v in out.terms.items()}
        terms.setdefault("total", out.loss.detach().float())
        if self.term_names is None:
            self.term_names = list(terms)
        names = self.term_names
        values = torch.stack([terms[k] for k in names])
        flags = torch.cat([(~torch.isfinite(values)).float(), torch.tensor([float(want_stop)], device=values.device)])
        flags = all_reduce_(flags.to(self._reduce_device()), self.ctx, op="max").cpu()
        nonfinite = [n for n, bad in zip(names, flags[:-1].tolist(), strict=True) if bad]
        total = out.loss * 0.0 if nonfinite else out.loss  # keep DDP's collective in step
        (self.scaler.scale(total) if self.scaler is not None else total).backward()
        if not nonfinite and self.scaler is None and not _grads_finite(self.optimizer):
            nonfinite = ["gradients"]
        if nonfinite:
            self.optimizer.zero_grad(set_to_none=True)
            for name, b in self.buffers.items():
                b.copy_(self.saved[name])
        else:
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return IterationOutcome(terms, out.stats, lr, nonfinite, bool(flags[-1]), out.probe)

    def _reduce_device(self) -> torch.device:
        return self.ctx.device if (self.ctx.distributed and self.ctx.device.type == "cuda") else torch.device("cpu")


def _grads_finite(optimizer: torch.optim.Optimizer) -> bool:
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not grads:
        return True
    norms = torch._foreach_norm(grads)
    return bool(torch.isfinite(torch.stack(norms)).all())
