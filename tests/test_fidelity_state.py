"""Fidelity of the global and local teachers' state updates against the reference (issue 13):
the prototype EMA and the key queue (model/model_seco.py at zwyang6/SeCo 202357f)."""

from __future__ import annotations

import torch
from _fidelity_helpers import load, max_abs

from seco_deploy.config import ModelConfig
from seco_deploy.model.network import SeCoNet, prototype_ema


def test_prototype_ema_matches_the_reference_sequence() -> None:
    # Three updates: repeated classes within a step (applied in order), images without a single
    # class (-1, skipped), and a step where every image is skipped.
    fx = load("state")
    protos = fx["protos0"]
    for step in range(fx["embeds"].shape[0]):
        label_idx = fx["label_idx"][step].view(-1)
        rows = torch.where(label_idx > 0, label_idx - 1, -1)
        protos = prototype_ema(protos, fx["embeds"][step], rows, fx.meta["proto_m"])
        assert max_abs(protos, fx["protos"][step]) < 1e-6, step


def test_enqueue_matches_the_reference_queue_pointer_and_tags() -> None:
    # 5 steps of 12 keys into a queue of 48: the pointer wraps after 4.
    fx = load("state")
    dim = fx["queue0"].shape[1]
    cfg = ModelConfig(backbone="vit_tiny_patch16_224",
                      backbone_kwargs={"img_size": 32, "embed_dim": dim, "depth": 1, "num_heads": 2},
                      aux_layer=-1, proj_hidden_dim=32, queue_size=fx.meta["moco_queue"], use_decomposition=False)
    net = SeCoNet(cfg, 4)
    net.queue.copy_(fx["queue0"])
    for step in range(fx["keys"].shape[0]):
        net.enqueue(fx["keys"][step], fx["key_tags"][step])
        assert torch.equal(net.queue, fx["queues"][step]), step
        assert torch.equal(net.queue_tags, fx["queue_tags"][step].long()), step
        assert int(net.queue_ptr) == int(fx["ptrs"][step]), step
    assert fx["ptrs"].tolist() == [12, 24, 36, 0, 12]
