"""Dense CRF for inference (seco_deploy.model.crf): the PyTorch lattice and mean field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seco_deploy.model.crf import (
    LABEL_CRF,
    MASK_CRF,
    CRFParams,
    PermutohedralLattice,
    crf_implementation,
    dense_crf,
    dense_crf_torch,
    probs_from_labels,
)


@pytest.mark.parametrize("sigma", [3.0, 6.0])
def test_lattice_filters_a_delta_into_a_gaussian_of_the_feature_scale(sigma: float) -> None:
    # Features x / sigma: the filter's response to a unit impulse is exp(-(x - x0)^2 / 2 sigma^2),
    # up to a constant factor and the lattice's approximation error.
    x = torch.arange(120.0).view(-1, 1)
    lattice = PermutohedralLattice(x / sigma)
    impulse = torch.zeros(120, 1)
    impulse[60] = 1.0
    response = lattice.filter(impulse)[:, 0]
    response = response / response.max()
    exact = torch.exp(-((x[:, 0] - 60) ** 2) / (2 * sigma**2))
    assert float((response - exact).abs().max()) < 0.12
    weights = response / response.sum()
    mean = float((weights * x[:, 0]).sum())
    std = float((weights * (x[:, 0] - mean) ** 2).sum().sqrt())
    assert abs(mean - 60) < 0.05 and abs(std - sigma) / sigma < 0.1


def test_lattice_of_2d_features_is_isotropic_and_linear() -> None:
    ys, xs = torch.meshgrid(torch.arange(31.0), torch.arange(31.0), indexing="ij")
    lattice = PermutohedralLattice(torch.stack([xs.flatten(), ys.flatten()], 1) / 3.0)
    a, b = torch.rand(31 * 31, 2), torch.rand(31 * 31, 2)
    torch.testing.assert_close(lattice.filter(a + 2 * b), lattice.filter(a) + 2 * lattice.filter(b), atol=1e-4,
                               rtol=1e-4)
    impulse = torch.zeros(31 * 31, 1)
    impulse[15 * 31 + 15] = 1.0
    r = lattice.filter(impulse)[:, 0].view(31, 31)
    exact = torch.exp(-((xs - 15) ** 2 + (ys - 15) ** 2) / (2 * 9.0))
    assert float((r / r.max() - exact).abs().max()) < 0.12


def test_probs_from_labels() -> None:
    labels = torch.tensor([[0, 2], [1, 1]])
    probs = probs_from_labels(labels, 3, gt_prob=0.7)
    assert probs.shape == (3, 2, 2)
    torch.testing.assert_close(probs[:, 0, 1], torch.tensor([0.15, 0.15, 0.7]))
    torch.testing.assert_close(probs.sum(0), torch.ones(2, 2))


def test_mean_field_removes_an_isolated_label_on_a_flat_image() -> None:
    # Flat grey image, class 0 at p = 0.8 everywhere except one pixel at p(class 1) = 0.55: the
    # smoothness terms outweigh that pixel's weak unary, so it joins its neighbours.
    image = np.full((20, 20, 3), 128, np.uint8)
    probs = torch.zeros(2, 20, 20)
    probs[0], probs[1] = 0.8, 0.2
    probs[:, 10, 10] = torch.tensor([0.45, 0.55])
    q = dense_crf_torch(torch.from_numpy(image), probs, CRFParams(iters=5, pos_w=3, pos_xy_std=3, bi_w=5,
                                                                    bi_xy_std=20, bi_rgb_std=10))
    assert q.shape == (2, 20, 20)
    torch.testing.assert_close(q.sum(0), torch.ones(20, 20))
    assert int(q.argmax(0).sum()) == 0


def test_mean_field_follows_colour_edges() -> None:
    # Left half dark, right half bright; labels are 70 % right, 30 % flipped at random. The
    # bilateral term pools each half, so the refined labels match the colour halves.
    rng = np.random.default_rng(0)
    image = np.zeros((24, 24, 3), np.uint8)
    image[:, 12:] = 220
    truth = np.zeros((24, 24), np.int64)
    truth[:, 12:] = 1
    noisy = np.where(rng.random((24, 24)) < 0.3, 1 - truth, truth)
    probs = probs_from_labels(torch.from_numpy(noisy), 2, gt_prob=0.6)
    q = dense_crf_torch(torch.from_numpy(image), probs, LABEL_CRF)
    assert float((q.argmax(0).numpy() == truth).mean()) == 1.0
    assert float((noisy == truth).mean()) < 0.8


def test_torch_and_pydensecrf2_agree() -> None:
    pytest.importorskip("pydensecrf.densecrf")
    assert crf_implementation("auto") == "pydensecrf2"
    rng = np.random.default_rng(1)
    image = np.zeros((48, 64, 3), np.uint8)
    image[:] = (40, 90, 160)
    image[10:40, 20:50] = (200, 60, 30)
    image = np.clip(image.astype(int) + rng.integers(-10, 10, image.shape), 0, 255).astype(np.uint8)
    logits = torch.nn.functional.interpolate(torch.randn(1, 4, 6, 8) * 2, size=(48, 64), mode="bilinear")[0]
    probs = torch.softmax(logits, 0)
    for params in (MASK_CRF, LABEL_CRF):
        ours = dense_crf(image, probs, params, implementation="torch")
        theirs = dense_crf(image, probs, params, implementation="pydensecrf2")
        assert float((ours.argmax(0) == theirs.argmax(0)).float().mean()) > 0.999
        assert float((ours - theirs).abs().max()) < 1e-2
