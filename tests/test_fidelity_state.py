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


def test_warmup_poly_adamw_matches_the_reference_optimiser() -> None:
    # Four groups (lr, lr, 10 lr, 10 lr) on a quadratic, 220 steps across the end of the warm-up:
    # the same learning rate at every step and the same parameters at the end.
    import dataclasses

    from seco_deploy.config import TrainConfig
    from seco_deploy.train.schedule import WarmupPolySchedule, build_optimizer

    fx = load("optimiser")
    m = fx.meta
    cfg = dataclasses.replace(TrainConfig(), lr=m["lr"], weight_decay=m["weight_decay"], betas=tuple(m["betas"]),
                              warmup_iters=m["warmup_iters"], warmup_ratio=m["warmup_ratio"], iters=m["iters"],
                              poly_power=m["power"], head_lr_mult=10.0)
    params = [torch.nn.Parameter(fx["init"][i].clone()) for i in range(4)]
    groups = [{"params": [p], "lr": cfg.lr * mult, "weight_decay": cfg.weight_decay}
              for p, mult in zip(params, (1.0, 1.0, cfg.head_lr_mult, cfg.head_lr_mult), strict=True)]
    opt = build_optimizer(groups, cfg)
    schedule = WarmupPolySchedule.from_config(cfg)
    lrs = torch.zeros(m["steps"], 4, dtype=torch.float64)
    for step in range(m["steps"]):
        schedule.apply(opt, step)
        opt.zero_grad()
        loss = sum(((p - 1.0) ** 2).sum() for p in params)
        loss.backward()
        opt.step()
        lrs[step] = torch.tensor([g["lr"] for g in opt.param_groups], dtype=torch.float64)
    assert torch.allclose(lrs, fx["lrs"], rtol=1e-12, atol=0)
    assert max_abs(torch.stack([p.detach() for p in params]), fx["final"]) < 1e-6
