"""Shared fixtures for the training tests: a tiny synthetic dataset and tiny configs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from seco_deploy.config import Config, build_config


def make_dataset(root: Path, images: int = 20, size: int = 64, seed: int = 0, val_fraction: float = 0.2) -> Path:
    """A synthetic co-occurrence set in VOC layout (train + val with masks)."""
    from seco_deploy.data.synth import synthesize

    synthesize(root, images=images, size=size, seed=seed, val_fraction=val_fraction)
    return root


def tiny_config(root: Path, *overrides: str) -> Config:
    """The ``test`` preset on ``root``, CPU, no workers, plus ``section.key=value`` overrides."""
    cfg = build_config("test", None, ["train.device=cpu", "data.num_workers=0", *overrides])
    cfg.data.root = str(root)
    return cfg


def read_metrics(run_dir: Path, kind: str = "train") -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if r["kind"] == kind]


def ddp_worker(rank: int, world: int, port: int, root: str, run_dir: str, out_dir: str, overrides: list[str]) -> None:
    """One rank of a Gloo DDP run (``torch.multiprocessing.spawn`` target): trains, then saves its state."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from seco_deploy.train.distributed import cleanup_distributed, init_distributed
    from seco_deploy.train.trainer import Trainer

    cfg = tiny_config(Path(root), *overrides)
    ctx = init_distributed("cpu")
    try:
        trainer = Trainer(cfg, Path(run_dir), ctx)
        trainer.run()
        torch.save({k: v.clone() for k, v in trainer.net.state_dict().items()}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        cleanup_distributed()
