"""The training loop: data, optimiser, schedule, AMP, DDP, validation, checkpoints, logging.

``train(cfg, run_dir, resume=False)`` runs method §2 for ``cfg.train.iters`` iterations (one
process, or every rank of a torchrun job). What one iteration computes (views, CAMs, pseudo
labels, decomposition, teacher and prototype updates, the losses and their schedule) is
:class:`seco_deploy.train.step.TrainingStep`; this module calls it once per iteration (with the
DDP wrapper under torchrun), then

1. checks every loss term for NaN/inf (agreed across ranks); a non-finite step is not applied:
   gradients are dropped, the prototypes/queue buffers are restored, the term is logged; after
   ``train.max_nonfinite`` such steps in a row the run stops, leaving the last good checkpoint;
2. steps AdamW (fp16: through the ``GradScaler``) with the learning rate of
   :class:`~seco_deploy.train.schedule.WarmupPolySchedule` at step ``iteration - 1``;
3. logs (``RUN/metrics.jsonl``), validates every ``eval_every`` iterations and at the end,
   saves ``RUN/last.pt`` every ``save_every`` iterations and at the end, ``RUN/best.pt`` when the
   validation mIoU named by ``train.best_metric`` improves (rank 0 only).

A run stops early, saving ``last.pt``, after ``train.max_minutes`` of wall time or on SIGINT /
SIGTERM (a second signal aborts at once).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from seco_deploy import __version__
from seco_deploy.config import Config, ConfigError
from seco_deploy.console import Console
from seco_deploy.data.io import atomic_write_text
from seco_deploy.data.synth import load_synth_info
from seco_deploy.runtime.checkpoint import CheckpointError, build_network, config_from_checkpoint, load_checkpoint
from seco_deploy.train.chain import ChainSpec, chain_counts, chain_figures
from seco_deploy.train.checkpoint import capture_rng_state, check_compatible, restore_rng_state, save_checkpoint
from seco_deploy.train.distributed import DistContext, all_reduce_, barrier, cleanup_distributed, init_distributed
from seco_deploy.train.iteration import Iteration, resolve_amp
from seco_deploy.train.loader import InfiniteBatches
from seco_deploy.train.runlog import MetricsLog, ProgressBar, peak_memory_mb
from seco_deploy.train.schedule import WarmupPolySchedule, build_optimizer
from seco_deploy.train.step import TERMS

_DDP_PARAMS = inspect.signature(DistributedDataParallel.__init__).parameters
BEST_METRICS = ("seg", "cam", "cam_aux")


class TrainingError(RuntimeError):
    """Training had to stop (repeated non-finite losses, ...)."""


class TrainingSetupError(TrainingError):
    """Training cannot start because of what it was given (data, run folder, --resume)."""


@dataclass
class TrainResult:
    """Where a run ended: iterations done, why it stopped, the best validation mIoU, its files."""

    run_dir: Path
    iteration: int
    stop_reason: str  # "done" | "time limit" | "interrupted"
    best_miou: float
    last_checkpoint: Path | None
    validation: dict[str, float] | None


def train(cfg: Config, run_dir: str | Path, resume: bool = False, console: Console | None = None) -> TrainResult:
    """Train in this process (joining the torchrun process group when there is one)."""
    ctx = init_distributed(cfg.train.device)
    try:
        return Trainer(cfg, Path(run_dir), ctx, resume=resume, console=console).run()
    finally:
        cleanup_distributed()


class Trainer:
    """One training run; see the module docstring. Build it, then call :meth:`run`."""

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        ctx: DistContext,
        resume: bool = False,
        console: Console | None = None,
    ) -> None:
        from seco_deploy.data.datasets import DatasetError, open_dataset
        from seco_deploy.data.transforms import TrainDataset
        from seco_deploy.train.step import TrainingStep

        torch.set_flush_denormal(True)
        self.cfg, self.run_dir, self.ctx = cfg, Path(run_dir), ctx
        self.console = console or Console(stderr=True)
        tc = cfg.train
        if tc.best_metric not in BEST_METRICS:
            raise ConfigError(f"'train.best_metric' = {tc.best_metric!r}; choose one of {', '.join(BEST_METRICS)}")
        self.device = ctx.device
        self.amp_dtype = resolve_amp(tc.amp, self.device)

        # ---- data
        if not cfg.data.root:
            raise TrainingSetupError("no dataset given: pass --data DIR (or set data.root)")
        try:
            self.train_set = open_dataset(cfg.data.root, cfg.data.train_split, cfg.data.format)
        except (DatasetError, OSError) as exc:
            raise TrainingSetupError(f"cannot open the training split {cfg.data.train_split!r}: {exc}") from exc
        self.classes = list(self.train_set.classes)
        self.val_set = None
        self.val_note = ""
        try:
            val = open_dataset(cfg.data.root, cfg.data.val_split, cfg.data.format)
            if list(val.classes) != self.classes:
                self.val_note = "validation split has other classes than the training split; not validating"
            elif not val.has_masks or len(val) == 0:
                self.val_note = f"split {cfg.data.val_split!r} has no masks; not validating"
            else:
                self.val_set = val
        except (DatasetError, OSError) as exc:
            self.val_note = f"no validation split {cfg.data.val_split!r} ({exc}); not validating"

        # ---- resume or fresh start
        self.last_path = self.run_dir / "last.pt"
        self.best_path = self.run_dir / "best.pt"
        ckpt = None
        if resume:
            if not self.last_path.is_file():
                raise TrainingSetupError(f"--resume: {self.last_path} does not exist; start without --resume")
            ckpt = load_checkpoint(self.last_path, map_location="cpu")
            check_compatible(ckpt, cfg, self.classes)
        elif self.last_path.exists():
            raise TrainingSetupError(
                f"{self.run_dir} already holds a run ({self.last_path.name}); pass --resume to continue it "
                "or choose another --out"
            )

        # ---- network, optimiser, precision
        torch.manual_seed(tc.seed)  # identical initial weights on every rank
        self.net = build_network(cfg, self.classes, load_pretrained=ckpt is None).to(self.device)
        self.net.train()
        self.optimizer = build_optimizer(self.net.param_groups(tc), tc)
        self.schedule = WarmupPolySchedule.from_config(tc)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.iteration = 0
        self.best_miou = -1.0
        if ckpt is not None:
            self._load_state(ckpt)
        else:
            torch.manual_seed(tc.seed + 1000 * ctx.rank)  # random crops differ between ranks
        self.generator = None  # the step draws from the global torch RNG (saved in checkpoints)

        self.step = TrainingStep(self.net, cfg.model, tc, cfg.data)
        step_module: torch.nn.Module = self.step
        if ctx.distributed:
            # Buffers (prototypes, queue) are synced once at start, then updated from gathered data on
            # every rank, so DDP need not broadcast them at each forward.
            sync_kw = ({"forward_sync_buffers": False} if "forward_sync_buffers" in _DDP_PARAMS
                       else {"broadcast_buffers": False})
            step_module = DistributedDataParallel(
                self.step,
                device_ids=[self.device] if self.device.type == "cuda" else None,
                find_unused_parameters=True,  # phases and ablations leave heads unused
                **sync_kw,
            )
        self.run_iteration = Iteration(step_module, self.optimizer, self.schedule, self.scaler, self.amp_dtype, ctx)
        try:
            self.batches = InfiniteBatches(
                TrainDataset(self.train_set, cfg.data, seed=tc.seed),
                batch_size=tc.batch_size,
                num_workers=cfg.data.num_workers,
                rank=ctx.rank,
                world_size=ctx.world_size,
                seed=tc.seed,
                start_iteration=self.iteration,
                pin_memory=self.device.type == "cuda",
            )
        except ValueError as exc:
            raise TrainingSetupError(str(exc)) from exc
        self.chain_spec = self._chain_spec()
        self.log: MetricsLog | None = None
        self._stop_signal = 0
        if ckpt is not None:
            self._restore_rng(self._rng_to_restore)  # last: nothing above may draw after it

    def _restore_rng(self, rng: dict[str, Any]) -> None:
        """Each rank's generators as saved; with another world size, rank 0's reseeded per rank."""
        per_rank = rng.get("ranks")
        if per_rank is not None and len(per_rank) == self.ctx.world_size:
            restore_rng_state(per_rank[self.ctx.rank])
            return
        if per_rank:
            rng = per_rank[0]
        if rng:
            restore_rng_state(rng)
        if self.ctx.world_size > 1:
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,))) + 1000 * self.ctx.rank)

    # ------------------------------------------------------------------ setup helpers
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _load_state(self, ckpt: dict[str, Any]) -> None:
        try:
            self.net.load_state_dict(ckpt["model"], strict=True)
            if "optimizer" in ckpt:
                self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{self.last_path} does not fit this network/optimiser: {exc}") from exc
        if self.scaler is not None and "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.iteration = int(ckpt.get("iteration", 0))
        self.best_miou = float(ckpt.get("best_miou", -1.0))
        self._rng_to_restore = ckpt.get("rng", {})
        stored = config_from_checkpoint(ckpt).train
        changed = [
            f.name for f in stored.__dataclass_fields__.values()
            if getattr(stored, f.name) != getattr(self.cfg.train, f.name) and f.name not in ("device", "max_minutes")
        ]
        self._resume_changes = changed

    # ------------------------------------------------------------------ checkpoints
    def _payload(self) -> dict[str, Any]:
        rng = capture_rng_state()
        if self.ctx.distributed:
            rng = {"ranks": _gather_objects(rng, self.ctx)}
        payload: dict[str, Any] = {
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.iteration,
            "scheduler": {"kind": "warmup_poly", "step": self.iteration, **vars(self.schedule)},
            "rng": rng,
            "config": self.cfg.to_yaml(),
            "classes": self.classes,
            "version": __version__,
            "best_miou": self.best_miou,
            "world_size": self.ctx.world_size,
        }
        if self.scaler is not None:
            payload["scaler"] = self.scaler.state_dict()
        return payload

    def save(self, path: Path) -> None:
        """Write a checkpoint (all ranks must call it: RNG states are gathered; rank 0 writes)."""
        payload = self._payload()
        if self.ctx.is_main:
            save_checkpoint(path, payload)

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal:
            raise KeyboardInterrupt
        self._stop_signal = signum

    # ------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        cfg, tc, ctx = self.cfg, self.cfg.train, self.ctx
        main = ctx.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.yaml", cfg.to_yaml())
            if self.iteration > 0:
                MetricsLog.truncate_after(self.run_dir, self.iteration)
            self.log = MetricsLog(self.run_dir)
        self._print_start()
        if self.iteration >= tc.iters:
            self._say(f"nothing to do: the run already has {self.iteration} of {tc.iters} iterations")
            return TrainResult(self.run_dir, self.iteration, "done", self.best_miou, self.last_path, None)

        old_handlers = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not in the main thread
                old_handlers[sig] = signal.signal(sig, self._on_signal)
        window: dict[str, float] = {}
        window_iters, window_time, window_rectified = 0, 0.0, 0.0
        window_chain: dict[str, torch.Tensor] = {}
        nonfinite_run = 0
        start_time = time.monotonic()
        stop_reason = "done"
        last_val: dict[str, float] | None = None
        try:
            with ProgressBar(tc.iters, self.iteration, main, self.console) as bar:
                while self.iteration < tc.iters:
                    it = self.iteration + 1
                    t0 = time.perf_counter()
                    batch = _to_device(next(self.batches), self.device)
                    elapsed_min = (time.monotonic() - start_time) / 60.0
                    want_stop = bool(self._stop_signal) or (tc.max_minutes > 0 and elapsed_min >= tc.max_minutes)
                    outcome = self.run_iteration(batch, it, want_stop, self.generator)
                    lr = outcome.lr
                    if outcome.nonfinite:
                        nonfinite_run += 1
                        self._event("nonfinite", it, terms=outcome.nonfinite, in_a_row=nonfinite_run)
                        self._say(
                            f"[yellow]iteration {it}: non-finite {', '.join(outcome.nonfinite)}; step skipped "
                            f"({nonfinite_run} in a row, limit {tc.max_nonfinite})[/]"
                        )
                        if nonfinite_run >= tc.max_nonfinite:
                            raise TrainingError(
                                f"{nonfinite_run} non-finite steps in a row (last: {', '.join(outcome.nonfinite)} "
                                f"at iteration {it}); stopped. The last good checkpoint is {self.last_path} "
                                "(iteration saved in it); lower train.lr or try --amp off, then --resume"
                            )
                    else:
                        nonfinite_run = 0
                        for k, v in outcome.terms.items():
                            window[k] = window.get(k, 0.0) + float(v)
                        window_rectified += float(outcome.stats.get("rectified", 0))
                        if self.chain_spec is not None:
                            for k, v in chain_counts(self.chain_spec, batch, outcome.probe).items():
                                window_chain[k] = window_chain[k] + v.cpu() if k in window_chain else v.cpu()
                        window_iters += 1
                    self.iteration = it
                    if self.device.type == "cuda" and (it % tc.log_every == 0):
                        torch.cuda.synchronize(self.device)
                    window_time += time.perf_counter() - t0
                    stop = outcome.stop
                    last = it == tc.iters or stop

                    if it % tc.log_every == 0 or last:
                        record = self._log_window(it, lr, window, window_iters, window_time, window_rectified)
                        self._log_chain(it, window_chain)
                        window, window_iters, window_time, window_rectified = {}, 0, 0.0, 0.0
                        window_chain = {}
                        if record is not None:
                            bar.update(it, f"loss {record.get('total', float('nan')):.4f} lr {lr:.2e}")
                    bar.update(it)
                    if self.val_set is not None and (it % tc.eval_every == 0 or last):
                        last_val = self._validate(it)
                    if it % tc.save_every == 0 or last:
                        self.save(self.last_path)
                    if stop:
                        stop_reason = "interrupted" if self._stop_signal else "time limit"
                        self._event("stop", it, reason=stop_reason, minutes=round(elapsed_min, 2))
                        break
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            self.batches.close()
            if self.log is not None:
                self.log.close()
        barrier(ctx)
        self._say(
            f"finished at iteration {self.iteration}/{tc.iters} ({stop_reason}); "
            f"checkpoint {self.last_path}" + (f", best mIoU {100 * self.best_miou:.2f}" if self.best_miou >= 0 else "")
        )
        return TrainResult(self.run_dir, self.iteration, stop_reason, self.best_miou, self.last_path, last_val)

    # ------------------------------------------------------------------ pieces of the loop
    def _reduce_device(self) -> torch.device:
        return self.device if (self.ctx.distributed and self.device.type == "cuda") else torch.device("cpu")

    def _log_window(
        self, it: int, lr: float, window: dict[str, float], iters: int, seconds: float, rectified: float
    ) -> dict[str, Any] | None:
        names = list(TERMS)
        extra = sorted(k for k in window if k not in names)
        names += extra
        sums = torch.tensor([window.get(k, math.nan if iters == 0 else 0.0) for k in names] + [rectified, iters,
                            seconds], dtype=torch.float64)
        present = torch.tensor([1.0 if k in window else 0.0 for k in names], dtype=torch.float64)
        if self.ctx.distributed:
            sums = all_reduce_(sums.to(self._reduce_device()), self.ctx).cpu()
            present = all_reduce_(present.to(self._reduce_device()), self.ctx, op="max").cpu()
        total_iters = float(sums[-2])
        if not self.ctx.is_main or total_iters == 0:
            return None
        mem, mem_kind = peak_memory_mb(self.device)
        record: dict[str, Any] = {"iteration": it, "lr": lr}
        for j, k in enumerate(names):
            if present[j] > 0:
                record[k] = float(sums[j]) / total_iters
        record["rectified"] = int(round(float(sums[-3])))
        record["sec_per_iter"] = float(sums[-1]) / total_iters
        record["peak_mem_mb"] = round(mem, 1)
        record["mem_kind"] = mem_kind
        if self.log is not None:
            self.log.write("train", record)
        return record

    def _chain_spec(self) -> ChainSpec | None:
        """What the chain is measured with, when the training split has masks (else None)."""
        if not self.train_set.has_masks:
            return None
        context_of: dict[int, int] = {}
        try:
            info = load_synth_info(self.cfg.data.root)
            ctx_index = dict(info.get("context_index", {}))
            for cls, ctx in dict(info.get("context_of", {})).items():
                if cls in self.classes and ctx in ctx_index:
                    context_of[self.classes.index(cls)] = int(ctx_index[ctx])
        except (FileNotFoundError, ValueError, KeyError):
            pass
        return ChainSpec(tuple(self.classes), self.cfg.data.local_crop_size, self.cfg.infer.bkg_thre, context_of)

    def _log_chain(self, it: int, window: dict[str, torch.Tensor]) -> None:
        """Sum the window's chain counts over ranks (every rank has the same keys) and log the figures."""
        if self.chain_spec is None or not window:
            return
        keys = sorted(window)
        flat = torch.cat([window[k].flatten().to(torch.float64) for k in keys])
        if self.ctx.distributed:
            flat = all_reduce_(flat.to(self._reduce_device()), self.ctx).cpu()
        sums, start = {}, 0
        for k in keys:
            n = window[k].numel()
            sums[k] = flat[start : start + n].round().to(torch.long).view(window[k].shape)
            start += n
        if self.log is not None:
            self.log.write("chain", {"iteration": it, **chain_figures(self.chain_spec, sums)})

    def _validate(self, it: int) -> dict[str, float]:
        from seco_deploy.train.validate import validate

        t0 = time.perf_counter()
        result = validate(self.net, self.val_set, self.cfg, self.ctx, batch_size=self.cfg.infer.batch,
                          autocast=self._autocast if self.amp_dtype is not None else None)
        score = result[f"miou_{self.cfg.train.best_metric}"]
        improved = not math.isnan(score) and score > self.best_miou
        if improved:
            self.best_miou = score
        result = {**result, "best_miou": self.best_miou, "seconds": round(time.perf_counter() - t0, 2)}
        if self.log is not None:
            self.log.write("val", {"iteration": it, **result})
        self._say(
            f"validation @ {it}: mIoU CAM {100 * result['miou_cam']:.2f}  aux CAM {100 * result['miou_cam_aux']:.2f}"
            f"  decoder {100 * result['miou_seg']:.2f}  cls F1 {100 * result['cls_f1']:.2f}"
            + ("  (best)" if improved else "")
        )
        if improved:
            self.save(self.best_path)
        return result

    def _event(self, name: str, it: int, **fields: Any) -> None:
        if self.log is not None:
            self.log.write("event", {"event": name, "iteration": it, **fields})

    def _say(self, message: str) -> None:
        if self.ctx.is_main:
            self.console.print(message, highlight=False)

    def _print_start(self) -> None:
        tc, ctx = self.cfg.train, self.ctx
        groups = ", ".join(
            f"{g.get('name', i)} {g['initial_lr']:.2e}" for i, g in enumerate(self.optimizer.param_groups)
        )
        params = sum(p.numel() for p in self.net.parameters() if p.requires_grad)
        lines = [
            f"seco train: {self.run_dir}  "
            f"({'resumed at iteration ' + str(self.iteration) if self.iteration else 'new run'})",
            f"  data {self.cfg.data.root}: {len(self.train_set)} training images, {len(self.classes) - 1} classes; "
            + (f"{len(self.val_set)} validation images" if self.val_set is not None else self.val_note),
            f"  device {self.device}, {ctx.world_size} process(es), amp {tc.amp}; "
            f"{self.cfg.model.backbone} ({params / 1e6:.2f}M trainable parameters)",
            f"  effective batch {tc.batch_size * ctx.world_size} ({tc.batch_size} per process x {ctx.world_size}); "
            f"base learning rate {tc.lr:.2e} (groups: {groups}); warm-up {tc.warmup_iters}, poly {tc.poly_power}",
            f"  {tc.iters} iterations, {self.batches.steps_per_epoch} per epoch; log every {tc.log_every}, "
            f"validate every {tc.eval_every}, save every {tc.save_every}"
            + (f"; stop after {tc.max_minutes:g} min" if tc.max_minutes > 0 else ""),
        ]
        if getattr(self, "_resume_changes", None):
            changed = ", ".join(self._resume_changes)
            lines.append(f"  [yellow]note: train settings differ from the checkpoint's: {changed}[/]")
        for line in lines:
            self._say(line)
        if self.log is not None:
            self._event(
                "start",
                self.iteration,
                effective_batch=tc.batch_size * ctx.world_size,
                lr=tc.lr,
                world_size=ctx.world_size,
                device=str(self.device),
                amp=tc.amp,
            )


# ---------------------------------------------------------------------------- helpers
def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, copy.deepcopy(obj))
    return out
