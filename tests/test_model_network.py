"""SeCoNet: shapes, parameter groups, teacher, prototypes and queue."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from _model_helpers import config_with, single_thread, tiny_model_config  # noqa: F401

from seco_deploy.model.network import SeCoNet, prototype_ema, queue_positions, single_class_rows


def _net(**overrides) -> SeCoNet:
    torch.manual_seed(0)
    return SeCoNet(tiny_model_config(**overrides), 3)


def test_test_preset_builds_fast_with_documented_shapes() -> None:
    _net()  # timm import and registry warm-up
    start = time.perf_counter()
    net = _net()
    assert time.perf_counter() - start < 0.5
    x = torch.randn(2, 3, 64, 48)
    out = net(x, global_view=torch.randn(2, 3, 64, 48), crops=torch.randn(6, 3, 32, 32))
    assert out["cls"].shape == (2, 32) and out["F"].shape == (2, 32, 4, 3)
    assert out["cls_logits"].shape == out["aux_logits"].shape == (2, 3)
    assert out["seg_logits"].shape == (2, 4, 4, 3)
    assert out["view_cls"].shape == (2, 2, 32)
    assert out["q"].shape == (2 * 5, 32)
    assert torch.allclose(out["q"].norm(dim=1), torch.ones(10))
    assert net.prototypes.shape == (3, 32) and net.queue.shape == (64, 32)
    assert net.queue_tags.dtype == torch.long and int(net.queue_tags.abs().sum()) == 0


def test_a_global_view_of_another_size_gets_its_own_pass_with_the_same_outputs() -> None:
    """data.global_view_size: the main view's outputs and the global view's class token are those
    of separate passes, and gradients reach the encoder through the global view's token."""
    net = _net().eval()  # eval: no dropout, so separate passes must agree exactly
    x, small = torch.randn(2, 3, 64, 48), torch.randn(2, 3, 32, 32, requires_grad=True)
    out = net.student(x, global_view=small)
    alone = net.student(x)
    assert out["view_cls"].shape == (2, 2, 32)
    for key in ("cls", "F", "F_aux", "cls_logits", "seg_logits"):
        assert torch.allclose(out[key], alone[key], atol=1e-6), key
    assert torch.allclose(out["view_cls"][:, 0], alone["cls"], atol=1e-6)
    assert torch.allclose(out["view_cls"][:, 1], net.encoder.forward_cls(small), atol=1e-6)
    (out["view_cls"][:, 1] * torch.randn(2, 32)).sum().backward()  # a plain sum of a LayerNorm output is constant
    assert small.grad is not None and small.grad.abs().sum() > 0


def test_forward_infer_outputs_and_classifier_on_max_pooling() -> None:
    net = _net().eval()
    x = torch.randn(2, 3, 48, 64)
    out = net.forward_infer(x, with_cam=True)
    assert set(out) == {"seg_logits", "cams", "cls_logits"}
    _, feats, _ = net.encoder(x)
    assert torch.allclose(out["cams"], F.conv2d(feats, net.classifier.weight), atol=1e-6)  # raw maps, no ReLU
    expected = feats.amax(dim=(2, 3)) @ net.classifier.weight.flatten(1).T
    assert torch.allclose(out["cls_logits"], expected, atol=1e-5)
    assert set(net.forward_infer(x)) == {"seg_logits"}


def test_param_groups_cover_every_trainable_parameter_once() -> None:
    net = _net()
    cfg = config_with().train
    groups = net.param_groups(cfg)
    assert [g["name"] for g in groups] == ["encoder", "encoder_norm", "heads", "decoder"]
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) and set(ids) == trainable
    teacher = {id(p) for p in net.teacher_parameters()}
    assert teacher and not teacher & set(ids)
    assert all(not p.requires_grad for p in net.teacher_parameters())
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["encoder"] == cfg.lr and math.isclose(lrs["heads"], cfg.lr * cfg.head_lr_mult)
    assert all(g["weight_decay"] == cfg.weight_decay for g in groups)


def test_baseline_has_no_contrast_branch() -> None:
    net = _net(use_decomposition=False, use_lil=False, use_lig=False, use_rectification=False, use_aux_roi=False)
    names = {n.split(".")[0] for n, _ in net.named_parameters()}
    assert names == {"encoder", "classifier", "aux_classifier", "decoder"}
    assert net.queue.shape[0] == 0
    no_crops = _net(use_decomposition=False)
    assert hasattr(no_crops, "teacher_head") and not hasattr(no_crops, "teacher_encoder")
    lig_only = _net(use_lil=False, use_rectification=False)
    assert hasattr(lig_only, "proj_head") and not hasattr(lig_only, "teacher_head")
    assert lig_only.queue.shape[0] == 0 and not lig_only.teacher_parameters()


def test_momentum_update_by_hand() -> None:
    net = _net()
    with torch.no_grad():
        net.encoder.vit.cls_token.fill_(1.0)
        net.teacher_encoder.vit.cls_token.fill_(3.0)
    net.momentum_update(0.9)
    assert torch.allclose(net.teacher_encoder.vit.cls_token, torch.full_like(net.encoder.vit.cls_token, 2.8))
    s, t = net.proj_head.mlp[0].weight, net.teacher_head.mlp[0].weight
    assert torch.allclose(t, s)  # teacher started as a copy: stays equal


def test_prototype_ema_by_hand() -> None:
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    feats = torch.tensor([[0.0, 2.0], [0.0, 1.0], [4.0, 0.0], [9.0, 9.0]])
    rows = torch.tensor([0, 1, 1, -1])
    out = prototype_ema(protos, feats, rows, 0.9)
    assert torch.allclose(out[0], F.normalize(torch.tensor([0.9, 0.2]), dim=0))
    # row 1 gets two features in order: 0.9 (0.9 P + 0.1 f1) + 0.1 f2
    row1 = 0.81 * protos[1] + 0.09 * feats[1] + 0.1 * feats[2]
    assert torch.allclose(out[1], F.normalize(row1, dim=0))
    assert torch.equal(out[2], protos[2])  # untouched row; the -1 feature is skipped


def test_prototype_weighted_variant_by_hand() -> None:
    protos = torch.tensor([[1.0, 0.0]])
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # cosines 1 and 0
    out = prototype_ema(protos, feats, torch.tensor([0, 0]), 0.9, mode="weighted")
    w1, w2 = math.e / (math.e + 1), 1 / (math.e + 1)
    assert torch.allclose(out[0], F.normalize(torch.tensor([0.9 + 0.1 * w1, 0.1 * w2]), dim=0))


def test_update_prototypes_uses_single_class_images_only() -> None:
    net = _net()
    before = net.prototypes.clone()
    labels = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert single_class_rows(labels).tolist() == [1, -1, -1]
    used = net.update_prototypes(torch.randn(3, 32), labels)
    assert used == 1
    assert torch.equal(net.prototypes[[0, 2]], before[[0, 2]])
    assert not torch.equal(net.prototypes[1], before[1])


def test_queue_wraps_around() -> None:
    assert queue_positions(4, 4, 6).tolist() == [4, 5, 0, 1]
    net = _net(queue_size=6)
    k1, k2 = F.normalize(torch.randn(4, 32), dim=1), F.normalize(torch.randn(4, 32), dim=1)
    net.enqueue(k1, torch.tensor([1, 2, 3, 0]))
    assert int(net.queue_ptr) == 4
    net.enqueue(k2, torch.tensor([5, 6, 7, 8]))
    assert int(net.queue_ptr) == 2
    assert net.queue_tags.tolist() == [7, 8, 3, 0, 5, 6]
    assert torch.equal(net.queue[[4, 5, 0, 1]], k2) and torch.equal(net.queue[2:4], k1[2:])
