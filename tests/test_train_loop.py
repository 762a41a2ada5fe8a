"""The training loop on the `test` preset: logs, checkpoints, validation, resume, guards."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from _train_helpers import make_dataset, read_metrics, tiny_config

from seco_deploy.runtime.checkpoint import load_checkpoint, load_for_inference
from seco_deploy.train.distributed import DistContext
from seco_deploy.train.schedule import WarmupPolySchedule
from seco_deploy.train.step import TrainingStep
from seco_deploy.train.trainer import Trainer, TrainingError


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synth") / "s", images=24, size=64)


def _train(root: Path, run: Path, *overrides: str, resume: bool = False) -> Trainer:
    trainer = Trainer(tiny_config(root, *overrides), run, DistContext(), resume=resume)
    trainer.result = trainer.run()
    return trainer


FULL_ARGS = ("train.iters=8", "train.eval_every=4", "train.save_every=3")


@pytest.fixture(scope="module")
def full_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    """An uninterrupted 8-iteration run through every phase of the test preset's schedule."""
    return _train(data_root, tmp_path_factory.mktemp("full") / "run", *FULL_ARGS)


def test_full_run_logs_every_term_and_writes_checkpoints(full_run: Trainer) -> None:
    trainer, run = full_run, full_run.run_dir
    assert trainer.result.iteration == 8 and trainer.result.stop_reason == "done"
    lines = read_metrics(run)
    assert [r["iteration"] for r in lines] == list(range(1, 9))
    cfg = trainer.cfg.train
    for r in lines:
        for key in ("cls", "cls_aux", "ptc", "lig", "lil", "seg", "reg", "total", "lr", "rectified", "sec_per_iter",
                    "peak_mem_mb"):
            assert key in r, key
        assert r["cls"] > 0 and r["cls_aux"] > 0 and r["ptc"] != 0
        step = r["iteration"] - 1  # the step's 0-based iteration
        if step > cfg.seg_start:
            assert r["seg"] > 0 and r["reg"] != 0
        else:
            assert r["seg"] == 0 and r["reg"] == 0
        if step > cfg.contrast_start:
            assert r["lil"] > 0
        else:
            assert r["lil"] == 0 and r["lig"] == 0
        assert r["lr"] == pytest.approx(cfg.lr * WarmupPolySchedule.from_config(cfg).factor(step))
    assert any(r["lig"] > 0 for r in lines if r["iteration"] - 1 > cfg.contrast_start)
    val = read_metrics(run, "val")
    assert [v["iteration"] for v in val] == [4, 8]
    for v in val:
        for key in ("miou_cam", "miou_cam_aux", "miou_seg", "cls_f1"):
            assert 0.0 <= v[key] <= 1.0
    assert (run / "config.yaml").is_file() and (run / "best.pt").is_file()
    ckpt = load_checkpoint(run / "last.pt")  # weights_only load
    assert ckpt["iteration"] == 8 and ckpt["classes"] == trainer.classes
    for key in ("model", "optimizer", "rng", "config", "version", "best_miou", "scheduler"):
        assert key in ckpt, key
    assert ckpt["best_miou"] == pytest.approx(max(v["miou_seg"] for v in val))
    net, cfg_back, classes = load_for_inference(run / "best.pt")
    assert classes == trainer.classes and cfg_back.train.iters == 8


def test_resume_after_crash_matches_uninterrupted_run(
    data_root: Path, full_run: Trainer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args, full = FULL_ARGS, full_run
    original = TrainingStep.forward

    def crash_at_5(self, batch, iteration, generator=None):  # type: ignore[no-untyped-def]
        if iteration == 4:  # the 5th iteration: last.pt holds iteration 3
            raise RuntimeError("simulated kill")
        return original(self, batch, iteration, generator)

    monkeypatch.setattr(TrainingStep, "forward", crash_at_5)
    with pytest.raises(RuntimeError, match="simulated kill"):
        _train(data_root, tmp_path / "cut", *args)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["iteration"] == 3
    monkeypatch.setattr(TrainingStep, "forward", original)
    resumed = _train(data_root, tmp_path / "cut", *args, resume=True)

    assert resumed.result.iteration == full.result.iteration == 8
    cut_lines, full_lines = read_metrics(tmp_path / "cut"), read_metrics(full.run_dir)
    assert [r["iteration"] for r in cut_lines] == list(range(1, 9))  # redone iterations replace the cut ones
    assert [r["lr"] for r in cut_lines] == [r["lr"] for r in full_lines]  # bit-for-bit schedule
    # Same batches, same crops, same RNG streams: the resumed run is the uninterrupted one, exactly.
    for a, b in zip(cut_lines, full_lines, strict=True):
        assert a["total"] == b["total"], a["iteration"]
    state_a, state_b = resumed.net.state_dict(), full.net.state_dict()
    for key in state_b:
        assert torch.equal(state_a[key], state_b[key]), key
    assert resumed.optimizer.param_groups[0]["lr"] == full.optimizer.param_groups[0]["lr"]


def test_existing_run_needs_resume_and_resume_needs_a_run(data_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _train(data_root, run, "train.iters=1", "train.eval_every=100")
    with pytest.raises(TrainingError, match="--resume"):
        Trainer(tiny_config(data_root, "train.iters=2"), run, DistContext())
    with pytest.raises(TrainingError, match="does not exist"):
        Trainer(tiny_config(data_root), tmp_path / "empty", DistContext(), resume=True)


def test_contradicting_config_is_refused_on_resume(data_root: Path, tmp_path: Path) -> None:
    from seco_deploy.runtime.checkpoint import CheckpointError

    run = tmp_path / "run"
    _train(data_root, run, "train.iters=1", "train.eval_every=100")
    with pytest.raises(CheckpointError, match="model.backbone_kwargs"):
        shallower = "model.backbone_kwargs={depth: 2, embed_dim: 32, num_heads: 2}"
        Trainer(tiny_config(data_root, "train.iters=2", shallower), run, DistContext(), resume=True)


def test_time_limit_stops_and_saves(data_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer = _train(data_root, run, "train.iters=50", "train.max_minutes=0.0001", "train.eval_every=100",
                     "data.num_workers=1")  # and batches from a worker process
    assert trainer.result.stop_reason == "time limit"
    assert 1 <= trainer.result.iteration < 50
    assert load_checkpoint(run / "last.pt")["iteration"] == trainer.result.iteration


def test_nonfinite_steps_are_skipped_then_stop_the_run(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = TrainingStep.forward
    poisoned = {2, 4, 5}  # 0-based iterations whose 'ptc' term is NaN

    def nan_ptc(self, batch, iteration, generator=None):  # type: ignore[no-untyped-def]
        out = original(self, batch, iteration, generator)
        if iteration in poisoned:
            out.loss = out.loss + torch.tensor(math.nan)
            out.terms["ptc"] = torch.tensor(math.nan)
            out.terms["total"] = out.loss.detach()
        return out

    monkeypatch.setattr(TrainingStep, "forward", nan_ptc)
    run = tmp_path / "run"
    trainer = Trainer(tiny_config(data_root, "train.iters=10", "train.save_every=2", "train.max_nonfinite=2",
                                  "train.eval_every=100"), run, DistContext())
    weights = {}
    original_step = trainer.optimizer.step

    def spy_step(*a, **k):  # type: ignore[no-untyped-def]
        weights["calls"] = weights.get("calls", 0) + 1
        return original_step(*a, **k)

    trainer.optimizer.step = spy_step  # type: ignore[method-assign]
    with pytest.raises(TrainingError, match="2 non-finite steps in a row.*ptc"):
        trainer.run()
    # Iterations 1, 2, 4 stepped; 3, 5, 6 were skipped; the run stopped at the 2nd in a row (6).
    assert weights["calls"] == 3
    events = [e for e in read_metrics(run, "event") if e["event"] == "nonfinite"]
    assert [e["iteration"] for e in events] == [3, 5, 6] and all(e["terms"] == ["ptc", "total"] for e in events)
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["iteration"] == 4  # the last good save
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert torch.isfinite(trainer.net.prototypes).all() and torch.isfinite(trainer.net.queue).all()
