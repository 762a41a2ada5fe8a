"""Helpers for the fidelity tests: read the reference fixtures, build the tiny network they use.

The fixtures (``tests/fixtures/reference/*.npz``) hold inputs and the outputs of the reference
implementation's own functions; ``benchmarks/reference_fixtures.py`` writes them (see the README
beside them). The tests read only these files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "reference"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class Fixture(dict):
    """``name -> tensor`` of one fixture file, with its ``meta`` (a dict) as an attribute."""

    meta: dict[str, Any]


def load(name: str) -> Fixture:
    """The arrays of ``FIXTURES/name.npz`` as tensors (strings stay numpy), and its ``meta``."""
    with np.load(FIXTURES / f"{name}.npz") as data:
        out = Fixture({k: torch.from_numpy(np.array(data[k])) for k in data.files if k != "meta"})
        out.meta = json.loads(str(data["meta"]))
    return out


def normalise(image_u8: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of uint8 RGB (N, 3, H, W), as the reference's data pipeline."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (image_u8.float() / 255.0 - mean) / std


def tiny_network():
    """Our :class:`SeCoNet` with the fixture's tiny ViT (4 blocks, width 32) and the reference's weights."""
    from seco_deploy.config import ModelConfig
    from seco_deploy.model.network import SeCoNet

    weights = load("tiny_network")
    meta = weights.meta
    cfg = ModelConfig(
        backbone="vit_tiny_patch16_224",
        backbone_kwargs=dict(meta["vit"]),
        aux_layer=meta["aux_layer"],
        use_decomposition=False,
        use_lil=False,
        use_lig=False,
        use_rectification=False,
    )
    net = SeCoNet(cfg, meta["num_classes"])
    encoder = {k[len("encoder."):]: v for k, v in weights.items() if k.startswith("encoder.")}
    net.encoder.vit.load_state_dict(encoder, strict=True)
    with torch.no_grad():
        net.classifier.weight.copy_(weights["classifier"])
        net.aux_classifier.weight.copy_(weights["aux_classifier"])
        for i, conv in enumerate(net.decoder.branches):
            conv.weight.copy_(weights[f"decoder.{i}.weight"])
            conv.bias.copy_(weights[f"decoder.{i}.bias"])
    return net.eval()


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())
