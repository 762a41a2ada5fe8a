"""`seco train` on the command line: options, usage errors, torchrun relaunch, kill + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _cli import invoke, said
from _train_helpers import make_dataset, read_metrics

from seco_deploy.cli.train import apply_options, torchrun_args
from seco_deploy.config import preset
from seco_deploy.runtime.checkpoint import load_checkpoint
from seco_deploy.train.distributed import torchrun_command
from seco_deploy.train.loader import EpochShardSampler
from seco_deploy.train.schedule import WarmupPolySchedule


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synth") / "s", images=16, size=64)


def test_options_fold_into_config(tmp_path: Path) -> None:
    cfg = apply_options(preset("test"), tmp_path, device="cpu", amp="off", pretrained="weights.pth", iters=5,
                        max_minutes=1.5)
    assert cfg.data.root == str(tmp_path) and cfg.train.device == "cpu" and cfg.train.amp == "off"
    assert cfg.model.pretrained == "weights.pth" and cfg.train.iters == 5 and cfg.train.max_minutes == 1.5
    scratch = apply_options(preset("cpu"), tmp_path, None, None, "null", None, None)
    assert preset("cpu").model.pretrained == "builtin:vit-tiny-fractal-5k" and scratch.model.pretrained is None


def test_torchrun_relaunch_drops_nproc_and_keeps_the_rest(tmp_path: Path) -> None:
    args = torchrun_args(tmp_path, tmp_path / "r", "cpu", None, ["train.lr=0.001"], True, "cpu", "bf16", None, None,
                         None)
    assert args == ["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--preset", "cpu",
                    "--set", "train.lr=0.001", "--resume", "--device", "cpu", "--amp", "bf16"]
    cmd = torchrun_command(4, args)
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
    assert cmd[5:8] == ["-m", "seco_deploy.cli", "train"]


def test_usage_errors(data_root: Path, tmp_path: Path) -> None:
    result = invoke(["train", "--data", str(tmp_path / "nope"), "--preset", "test"])
    assert result.exit_code == 2 and said(result, "does not exist")
    result = invoke(["train", "--data", str(data_root), "--preset", "test", "--set", "train.bogus=1"])
    assert result.exit_code == 2 and said(result, "train.bogus")
    result = invoke(["train", "--data", str(data_root), "--preset", "test", "--amp", "fp16",
                                 "--device", "cpu", "--out", str(tmp_path / "r")])
    assert result.exit_code == 5 and said(result, "CUDA")
    result = invoke(["train", "--data", str(data_root), "--preset", "test", "--resume",
                                 "--out", str(tmp_path / "none")])
    assert result.exit_code == 2 and said(result, "does not exist")


def test_cli_run_then_contradicting_resume(data_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "r"
    base = ["train", "--data", str(data_root), "--preset", "test", "--out", str(run), "--device", "cpu",
            "--set", "data.num_workers=0", "--set", "train.eval_every=100"]
    result = invoke([*base, "--iters", "2"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(run / "last.pt")["iteration"] == 2
    assert said(result, "effective batch 4")
    result = invoke([*base, "--iters", "3", "--resume", "--set", "model.backbone=vit_small_patch16_224"])
    assert result.exit_code == 2 and said(result, "model.backbone")


def test_sampler_resume_position_and_shards() -> None:
    full = EpochShardSampler(10, batch_size=2, rank=0, world_size=1, seed=5)
    assert full.steps_per_epoch == 5
    epoch0, epoch1 = full.epoch_indices(0), full.epoch_indices(1)
    assert sorted(epoch0) == list(range(10)) and epoch0 != epoch1  # a permutation, reshuffled each epoch
    resumed = EpochShardSampler(10, batch_size=2, seed=5)
    resumed.set_position(1, 4)  # 2 batches into epoch 1
    assert list(resumed) == [(1, i) for i in epoch1[4:]]
    r0 = EpochShardSampler(11, batch_size=2, rank=0, world_size=2, seed=5)
    r1 = EpochShardSampler(11, batch_size=2, rank=1, world_size=2, seed=5)
    s0, s1 = r0.epoch_indices(3), r1.epoch_indices(3)
    assert len(s0) == len(s1) == 4 and not set(s0) & set(s1)  # disjoint, equal, whole batches
    with pytest.raises(ValueError, match="fewer than batch size"):
        EpochShardSampler(3, batch_size=2, world_size=2)


@pytest.mark.slow
def test_sigkill_then_resume_finishes_with_the_same_schedule(data_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "r"
    cmd = [sys.executable, "-m", "seco_deploy.cli", "train", "--data", str(data_root), "--preset", "test",
           "--out", str(run), "--device", "cpu", "--iters", "30", "--set", "train.save_every=2",
           "--set", "train.eval_every=1000", "--set", "data.num_workers=1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        lines = read_metrics(run) if (run / "metrics.jsonl").exists() else []
        if lines and lines[-1]["iteration"] >= 5:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(run / "last.pt")["iteration"]
    assert 2 <= killed_at < 30
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = read_metrics(run)
    assert [r["iteration"] for r in lines] == list(range(1, 31))
    cfg = preset("test")
    schedule = WarmupPolySchedule(cfg.train.warmup_iters, cfg.train.warmup_ratio, 30, cfg.train.poly_power)
    assert [r["lr"] for r in lines] == [cfg.train.lr * schedule.factor(i) for i in range(30)]
    assert load_checkpoint(run / "last.pt")["iteration"] == 30
    assert json.loads((run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()[0])["kind"] == "event"
    assert torch.load(run / "last.pt", weights_only=True)["iteration"] == 30
