"""SeCo losses on hand-made tensors, values worked out in each test (including the empty cases)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from _model_helpers import single_thread  # noqa: F401

from seco_deploy import losses


def _unit(*rows: list[float]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


# ---------------------------------------------------------------------------- classification
def test_multilabel_soft_margin_by_hand() -> None:
    logits = torch.tensor([[0.0, 2.0]])
    labels = torch.tensor([[1.0, 0.0]])
    # class 0: -log s(0) = log 2; class 1 (absent): -log s(-2) = log(1 + e^2); mean over classes
    expected = (math.log(2) + math.log(1 + math.e**2)) / 2
    assert math.isclose(float(losses.multilabel_soft_margin(logits, labels)), expected, rel_tol=1e-6)


# ---------------------------------------------------------------------------- LiL
def test_lil_single_positive_by_hand() -> None:
    q = _unit([1.0, 0.0]).requires_grad_()
    pool = _unit([1.0, 0.0], [0.0, 1.0], [-1.0, 0.0])
    pool_tags = torch.tensor([1, 2, -1])
    loss, tags, n = losses.lil_loss(q, pool, torch.tensor([1]), pool_tags, tau=0.5)
    # logits 2, 0, (-2 excluded: tag -1): -(2 - log(e^2 + e^0)) = log(1 + e^-2)
    assert math.isclose(loss.item(), math.log(1 + math.exp(-2)), rel_tol=1e-6)
    assert tags.tolist() == [1] and int(n) == 0
    loss.backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


def test_lil_averages_over_positives_then_anchors_and_skips_excluded() -> None:
    tau = 1.0
    q = _unit([1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0])
    tags = torch.tensor([0, 1, -1, 3])  # background anchor, class anchor, excluded, no positive in pool
    pool = _unit([1.0, 0.0], [0.0, 1.0], [0.0, 1.0])
    pool_tags = torch.tensor([0, 1, 1])
    loss, _, _ = losses.lil_loss(q, pool, tags, pool_tags, tau=tau)
    # anchor 0 (tag 0): logits [1, 0, 0], one positive (j=0): -(1 - log(e + 2))
    a0 = -(1 - math.log(math.e + 2))
    # anchor 1 (tag 1): logits [0, 1, 1], positives j=1, 2: mean of -(1 - log(1 + 2e)) twice
    a1 = -(1 - math.log(1 + 2 * math.e))
    assert math.isclose(loss.item(), (a0 + a1) / 2, rel_tol=1e-6)


def test_lil_empty_cases_are_exactly_zero_with_gradient_path() -> None:
    q = _unit([1.0, 0.0], [0.0, 1.0]).requires_grad_()
    pool = _unit([1.0, 0.0], [0.0, 1.0])
    for tags, pool_tags in [
        (torch.tensor([-1, -1]), torch.tensor([1, 2])),  # all anchors excluded
        (torch.tensor([1, 2]), torch.tensor([3, 3])),  # no positives
        (torch.tensor([1, 2]), torch.tensor([-1, -1])),  # empty pool
    ]:
        loss, _, _ = losses.lil_loss(q, pool, tags, pool_tags, tau=0.08, sigma=0.9)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(q.grad).all() and float(q.grad.abs().sum()) == 0.0
        q.grad = None


def _rectify_case(num_far: int):
    q = _unit([1.0, 0.0])
    pool = _unit(*([[1.0, 0.0]] + [[0.0, 1.0]] * num_far))  # one similar positive, the rest orthogonal
    pool_tags = torch.ones(1 + num_far, dtype=torch.long)
    return q, pool, pool_tags


def test_rectification_fires_when_more_than_sigma_of_positives_lie_below_the_mean() -> None:
    # 1 positive at similarity 1 and 10 at 0: mean 1/11, 10 of 11 below (0.909 > 0.9) -> tag -1
    q, pool, pool_tags = _rectify_case(10)
    loss, tags, n = losses.lil_loss(q.requires_grad_(), pool, torch.tensor([1]), pool_tags, tau=0.1, sigma=0.9)
    assert tags.tolist() == [-1] and int(n) == 1
    assert loss.item() == 0.0  # its only anchor left LiL
    assert losses.lig_loss(q, torch.eye(2), tags) == 0.0  # ... and LiG


def test_rectification_does_not_fire_at_or_below_sigma_or_on_background() -> None:
    # 1 at 1 and 9 at 0: 9 of 10 below = 0.9, not above sigma
    q, pool, pool_tags = _rectify_case(9)
    tags, n = losses.rectify_tags(q, pool, torch.tensor([1]), pool_tags, sigma=0.9)
    assert tags.tolist() == [1] and int(n) == 0
    # background anchors (tag 0) are never rectified
    q, pool, pool_tags = _rectify_case(10)
    tags, n = losses.rectify_tags(q, pool, torch.tensor([0]), pool_tags * 0, sigma=0.9)
    assert tags.tolist() == [0] and int(n) == 0


# ---------------------------------------------------------------------------- LiG
def test_lig_by_hand_uses_only_classes_present_among_tags() -> None:
    q = _unit([1.0, 0.0], [0.0, 1.0], [1.0, 1.0]).requires_grad_()
    prototypes = _unit([1.0, 0.0], [0.0, 1.0], [-1.0, 0.0])
    tags = torch.tensor([1, 2, 0])  # classes 1 and 2 present; class 3's prototype is left out
    loss = losses.lig_loss(q, prototypes, tags, tau=0.5)
    # anchor 0: logits [2, 0] -> -log(e^2 / (e^2 + 1)); anchor 1 the same; anchor 2 (background) skipped
    expected = math.log(1 + math.exp(-2))
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    loss.backward()
    assert torch.isfinite(q.grad).all()


def test_lig_without_class_anchors_is_zero() -> None:
    q = _unit([1.0, 0.0], [0.0, 1.0]).requires_grad_()
    loss = losses.lig_loss(q, torch.eye(2), torch.tensor([0, -1]), tau=0.1)
    assert loss.item() == 0.0
    loss.backward()
    assert float(q.grad.abs().sum()) == 0.0


def test_lig_single_class_batch_is_zero() -> None:
    q = _unit([1.0, 0.0], [0.3, 1.0])
    loss = losses.lig_loss(q, torch.eye(2), torch.tensor([2, 2]), tau=0.1)
    assert abs(loss.item()) < 1e-6  # softmax over one prototype is 1


# ---------------------------------------------------------------------------- PTC
def test_ptc_by_hand() -> None:
    # 2x2 map, patches a=[1,0], b=[1,0], c=[1,1], d ignored; labels a, b: class 1, c: background
    feats = torch.tensor([[1.0, 1.0, 1.0, 5.0], [0.0, 0.0, 1.0, -2.0]]).reshape(1, 2, 2, 2).requires_grad_()
    label = torch.tensor([[1, 1], [0, 255]])[None]
    loss = losses.ptc_loss(feats, label)
    # positives (a,b), (b,a): |cos| 1 -> 0.5 (1 - 1); negatives (a,c),(c,a),(b,c),(c,b): 1/sqrt2
    assert math.isclose(loss.item(), 0.5 / math.sqrt(2), rel_tol=1e-6)
    loss.backward()
    assert torch.isfinite(feats.grad).all()


def test_ptc_empty_and_one_sided() -> None:
    feats = torch.randn(1, 4, 2, 2, requires_grad=True)
    empty = losses.ptc_loss(feats, torch.full((1, 2, 2), 255))
    assert empty.item() == 0.0
    empty.backward()
    assert float(feats.grad.abs().sum()) == 0.0
    same = torch.ones(1, 4, 2, 2)
    assert abs(float(losses.ptc_loss(same, torch.ones(1, 2, 2, dtype=torch.long)))) < 1e-6  # no negatives


# ---------------------------------------------------------------------------- segmentation
def test_balanced_seg_loss_by_hand() -> None:
    logits = torch.zeros(1, 3, 1, 4)
    logits[0, 1, 0, 2] = math.log(2.0)  # pixel 2: p(class 1) = 2 / 4
    label = torch.tensor([[[0, 0, 1, 255]]])
    loss = losses.balanced_seg_loss(logits, label)
    bg = math.log(3)  # pixels 0 and 1: uniform over 3 classes
    fg = -math.log(0.5)
    assert math.isclose(loss.item(), 0.5 * (bg + fg), rel_tol=1e-6)


def test_balanced_seg_loss_empty_halves() -> None:
    logits = torch.zeros(1, 2, 1, 2, requires_grad=True)
    only_bg = losses.balanced_seg_loss(logits, torch.tensor([[[0, 255]]]))
    assert math.isclose(only_bg.item(), 0.5 * math.log(2), rel_tol=1e-6)  # the empty half adds 0
    none = losses.balanced_seg_loss(logits, torch.full((1, 1, 2), 255))
    assert none.item() == 0.0
    none.backward()
    assert torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------------------- CRF regulariser
def _crf_inputs():
    # 2x4 image made of two 2x2 blocks, so nearest and bilinear halving give the block values.
    image = torch.zeros(1, 3, 2, 4)
    image[0, :, :, :2] = torch.tensor([100.0, 50.0, 10.0])[:, None, None]
    image[0, :, :, 2:] = torch.tensor([115.0, 50.0, 10.0])[:, None, None]
    probs = torch.zeros(1, 2, 2, 4)
    probs[0, 0, :, :2], probs[0, 1, :, :2] = 0.8, 0.2
    probs[0, 0, :, 2:], probs[0, 1, :, 2:] = 0.6, 0.4
    return image, probs


def test_crf_energy_exact_on_a_small_grid() -> None:
    image, probs = _crf_inputs()
    probs.requires_grad_()
    roi = torch.ones(1, 2, 4)
    loss = losses.crf_energy_loss(image, probs, roi, torch.zeros(1, 2, 4, dtype=torch.bool), weight=1.0)
    # two points 1 px apart at half scale; colours differ by 15 in red
    w12 = math.exp(-0.5 * (1 / 50.0**2 + 1.0))
    s = [[0.8, 0.2], [0.6, 0.4]]
    g = [1 - 0.8, 1 - 0.6]
    kernel = [[1.0, w12], [w12, 1.0]]
    energy = sum(s[i][k] * g[i] * kernel[i][j] * s[j][k] for k in range(2) for i in range(2) for j in range(2))
    assert math.isclose(loss.item(), -energy, rel_tol=1e-5)
    loss.backward()
    assert torch.isfinite(probs.grad).all()


def test_crf_gate_is_one_on_unlabeled_and_roi_masks_pixels() -> None:
    image, probs = _crf_inputs()
    unl = torch.zeros(1, 2, 4, dtype=torch.bool)
    unl[0, :, 2:] = True  # right block unlabeled: gate 1
    roi = torch.ones(1, 2, 4)
    loss = losses.crf_energy_loss(image, probs, roi, unl, weight=1.0)
    w12 = math.exp(-0.5 * (1 / 50.0**2 + 1.0))
    s = [[0.8, 0.2], [0.6, 0.4]]
    g = [0.2, 1.0]
    kernel = [[1.0, w12], [w12, 1.0]]
    energy = sum(s[i][k] * g[i] * kernel[i][j] * s[j][k] for k in range(2) for i in range(2) for j in range(2))
    assert math.isclose(loss.item(), -energy, rel_tol=1e-5)
    roi[0, :, 2:] = 0  # right block outside the box: only the left point remains (s_2 = 0)
    loss = losses.crf_energy_loss(image, probs, roi, torch.zeros_like(unl), weight=1.0)
    assert math.isclose(loss.item(), -(0.8**2 * 0.2 + 0.2**2 * 0.2), rel_tol=1e-5)


def test_crf_coarse_grid_approximates_the_dense_energy() -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.zeros(1, 3, 32, 32)
    image[:, :, :, 16:] = 60.0  # two colour regions
    image = image + torch.rand(1, 3, 32, 32, generator=g) * 4
    logits = torch.zeros(1, 2, 32, 32)
    logits[:, 0, :, :16] = 2.0
    probs = torch.softmax(logits, dim=1)
    roi = torch.ones(1, 32, 32)
    unl = torch.zeros(1, 32, 32, dtype=torch.bool)
    exact = losses.crf_energy_loss(image, probs, roi, unl, weight=1.0, max_points=256)  # 16x16: f = 1
    coarse = losses.crf_energy_loss(image, probs, roi, unl, weight=1.0, max_points=64)  # f = 2
    assert abs(float(coarse) - float(exact)) / abs(float(exact)) < 0.05


def test_crf_dense_energy_gradient_matches_finite_differences_across_blocks() -> None:
    torch.manual_seed(0)
    sg = torch.rand(2, 3, 7, dtype=torch.double, requires_grad=True)
    s = torch.rand(2, 3, 7, dtype=torch.double, requires_grad=True)
    feats = torch.randn(2, 7, 5, dtype=torch.double)
    # block of 10 kernel entries: rows are built one at a time
    assert torch.autograd.gradcheck(lambda a, b: losses._DenseEnergy.apply(a, b, feats, 10), (sg, s))
