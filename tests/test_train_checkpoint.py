"""train/checkpoint.py: atomic save, safe load, inference rebuild, compatibility checks, RNG state."""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from seco_deploy.config import preset
from seco_deploy.runtime.checkpoint import CheckpointError, load_checkpoint, load_for_inference
from seco_deploy.train.checkpoint import (
    build_inference_checkpoint,
    capture_rng_state,
    check_compatible,
    restore_rng_state,
    save_checkpoint,
)

CLASSES = ["background", "boat", "water"]


def test_inference_checkpoint_round_trip(tmp_path: Path) -> None:
    path = build_inference_checkpoint(tmp_path / "m.pt", CLASSES, seed=3)
    net, cfg, classes = load_for_inference(path, "cpu")
    assert classes == CLASSES and not net.training
    assert net.num_classes == 2 and cfg.model.backbone_kwargs["embed_dim"] == 32
    assert all(not p.requires_grad for p in net.parameters())
    ckpt = torch.load(path, weights_only=True)  # plain tensors and data only
    for key, value in net.state_dict().items():
        assert torch.equal(value, ckpt["model"][key]), key
    out = net.forward_infer(torch.randn(1, 3, 64, 64), with_cam=True)
    assert out["seg_logits"].shape == (1, 3, 4, 4) and out["cams"].shape == (1, 2, 4, 4)
    # The seed decides the weights.
    other = build_inference_checkpoint(tmp_path / "o.pt", CLASSES, seed=4)
    assert not torch.equal(torch.load(other, weights_only=True)["model"]["classifier.weight"],
                           ckpt["model"]["classifier.weight"])


def test_pretrained_name_is_not_loaded_for_inference(tmp_path: Path) -> None:
    path = build_inference_checkpoint(tmp_path / "m.pt", CLASSES, overrides=["model.pretrained=/no/such/file.pth"])
    net, cfg, _ = load_for_inference(path)
    assert cfg.model.pretrained == "/no/such/file.pth"  # the record is kept, the file never opened


def test_pickled_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": "", "classes": CLASSES, "payload": argparse.Namespace(x=1)}, path)
    with pytest.raises(CheckpointError, match="pickled Python object.*argparse.Namespace"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="pickled"):
        load_for_inference(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"definitely not torch", "not a readable PyTorch checkpoint"),
        (None, "does not exist"),
    ],
)
def test_garbage_and_missing_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "x.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_foreign_torch_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="lacks model, config, classes"):
        load_checkpoint(tmp_path / "a.pt")
    torch.save([torch.zeros(1)], tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(tmp_path / "b.pt")


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "config": "", "classes": CLASSES})

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"model": {"w": torch.zeros(2)}, "config": "", "classes": CLASSES})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))  # old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left


def test_contradicting_config_is_refused(tmp_path: Path) -> None:
    path = build_inference_checkpoint(tmp_path / "m.pt", CLASSES)
    ckpt = load_checkpoint(path)
    cfg = preset("test")
    check_compatible(ckpt, cfg, CLASSES)  # same: fine
    with pytest.raises(CheckpointError, match="classes differ"):
        check_compatible(ckpt, cfg, ["background", "boat", "sky"])
    other = cfg.override(["model.backbone=vit_small_patch16_224"])
    with pytest.raises(CheckpointError, match="model.backbone"):
        check_compatible(ckpt, other, CLASSES)
    wider = cfg.override(["model.backbone_kwargs={depth: 3, embed_dim: 48, num_heads: 2}"])
    with pytest.raises(CheckpointError, match="backbone_kwargs"):
        check_compatible(ckpt, wider, CLASSES)


def test_rng_state_round_trip(tmp_path: Path) -> None:
    state = capture_rng_state()
    save_checkpoint(tmp_path / "r.pt", {"model": {}, "config": "", "classes": CLASSES, "rng": state})
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    restore_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first
