"""Shared fixtures for the model, CAM and loss tests: tiny configs, networks and batches."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from seco_deploy.config import Config, ModelConfig, preset

TINY_VIT = {"depth": 3, "embed_dim": 32, "num_heads": 2}


def config_with(**model_overrides: object) -> Config:
    """The ``test`` preset with ``model`` fields replaced."""
    cfg = preset("test")
    cfg.model = dataclasses.replace(cfg.model, **model_overrides)
    return cfg


def tiny_model_config(**overrides: object) -> ModelConfig:
    return config_with(**overrides).model


def make_batch(cfg: Config, num_classes: int, batch: int = 2, seed: int = 0, labels: torch.Tensor | None = None):
    """A training batch in the layout of docs/internals.md (random pixels, boxes inside the crop)."""
    g = torch.Generator().manual_seed(seed)
    s = cfg.data.crop_size
    if labels is None:
        labels = torch.zeros(batch, num_classes)
        labels[0, 0] = 1.0
        if batch > 1:
            labels[1, : min(2, num_classes)] = 1.0
    img_box = torch.tensor([[0, s, 0, s]] + [[4, s - 8, 8, s]] * (batch - 1), dtype=torch.long)
    return {
        "image": torch.randn(batch, 3, s, s, generator=g),
        "global_view": torch.randn(batch, 3, s, s, generator=g),
        "local_view": torch.randn(batch, 3, s, s, generator=g),
        "img_box": img_box,
        "tags": labels.float(),
    }


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run a module's tests on one intra-op thread: on a shared 2-core machine, two OpenMP threads
    contending with other processes make these tiny ops 10-20x slower. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
