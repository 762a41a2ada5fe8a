"""Kill-and-rerun: a `seco predict` killed with SIGKILL mid-run, then re-run, leaves every output
complete and no temporary file behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from _predict_helpers import checkpoint, manifest, read_palette_png, write_image

__all__ = ["checkpoint"]  # fixture

IMAGES = 120


def test_sigkill_then_rerun_completes_without_truncated_files(tmp_path: Path, checkpoint: Path) -> None:
    for i in range(IMAGES):
        write_image(tmp_path / "in" / f"{i:03d}.png", 48, 40 + (i % 3), seed=i)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "seco_deploy.cli", "predict", str(tmp_path / "in"), "--model", str(checkpoint),
           "--out", str(out), "--batch", "1", "--workers", "1", "--overlay", "--save-probs", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    masks = out / "masks"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if masks.is_dir() and len(os.listdir(masks)) >= 5:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the first run ended before it could be killed: " + proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done_before = {p.name for p in masks.iterdir() if not p.name.startswith(".")}
    assert 0 < len(done_before) < IMAGES

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    records = [r for r in manifest(out / "manifest.jsonl") if r["type"] == "image"]
    assert len(records) == IMAGES and {r["status"] for r in records} <= {"ok", "skipped"}
    skipped = {r["name"] + ".png" for r in records if r["status"] == "skipped"}
    assert skipped and skipped <= done_before  # work done before the kill was kept, not redone
    for kind, suffix in (("masks", ".png"), ("overlays", ".jpg"), ("probs", ".npz")):
        files = sorted(os.listdir(out / kind))
        assert files == [f"{i:03d}{suffix}" for i in range(IMAGES)], f"{kind}: stray or missing files"
    for i in range(IMAGES):
        assert read_palette_png(masks / f"{i:03d}.png").shape == (48, 40 + (i % 3))
