"""Fidelity of the losses against the reference implementation's own outputs (issue 13).

Fixtures from ``benchmarks/reference_fixtures.py`` (zwyang6/SeCo at 202357f; the CRF term through
its compiled bilateral filter). Departures (docs/fidelity.md) are shown on a triggering case.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from _fidelity_helpers import load, max_abs, normalise

from seco_deploy import losses

IGNORE = 255


# ---------------------------------------------------------------------------- LiL and rectification
def spec_lil(q: torch.Tensor, pool: torch.Tensor, tags: torch.Tensor, pool_tags: torch.Tensor,
             tau: float) -> torch.Tensor:
    """SPEC 2.9, written out: mean over anchors (tag != -1, >= 1 positive) of the mean over their
    positives of -(q.k/tau - logsumexp over pool entries with tag != -1)."""
    total, count = 0.0, 0
    ok = pool_tags != -1
    for i in range(q.shape[0]):
        pos = (pool_tags == tags[i]) & ok
        if tags[i] == -1 or not bool(pos.any()):
            continue
        logits = (pool @ q[i]) / tau
        lse = torch.logsumexp(logits[ok], 0)
        total += float(-(logits[pos] - lse).mean())
        count += 1
    return torch.tensor(total / max(count, 1))


def reference_lil(q: torch.Tensor, pool: torch.Tensor, tags: torch.Tensor, pool_tags: torch.Tensor,
                  tau: float) -> tuple[float, torch.Tensor]:
    """What model/losses.py LIL_Loss computes, restated (docs/fidelity.md): logits shifted by their
    row maximum; rows of -1 anchors zeroed; its rectification (tag -> 0 when entries below the row
    mean of the positive logits outnumber the others more than 10 to 1); columns of -1 keys
    zeroed; a denominator D_i that drops every entry whose exp is exactly 1 (the zeroed ones and
    the row maximum); per anchor (sum_j pos_ij l_ij - P log D_i) / NNZ, with P the pool size and
    NNZ the number of non-zero positive logits in the whole batch; summed over anchors whose term
    is negative, divided by the number of anchors, negated."""
    a, p = q.shape[0], pool.shape[0]
    logits = (q @ pool.T) / tau
    logits = logits - logits.max(1, keepdim=True).values
    pos = (tags[:, None] == pool_tags[None, :]).float()
    drop = tags == -1
    pos[drop] = 0
    logits[drop] = 0
    lp = logits * pos
    revised = tags.clone()
    for i in range(a):
        mean = lp[i].mean()
        below = int((lp[i] < mean).sum())
        if below / (p - below + 1e-6) > 10:
            revised[i] = 0
            lp[i] = 0
    logits[:, pool_tags == -1] = 0
    e = torch.exp(logits)
    e = e * (e != 1.0)
    d = e.sum(1)
    nnz = int((lp != 0).sum())
    total = 0.0
    for i in range(a):
        row = float(lp[i].sum() - p * torch.log(d[i] + 1e-12))
        if nnz > 0 and d[i] > 0 and row < 0:
            total += row / nnz
    return -total / a, revised


def test_lil_departs_from_the_reference_formula_as_documented() -> None:
    # Departure: we compute SPEC 2.9 (the paper's supervised contrast); the reference's LIL_Loss
    # weights the denominator by the pool size P per anchor, normalises by the batch's number of
    # positive pairs and drops each row's best match from the denominator. Both are restated
    # here and checked against the two implementations.
    fx = load("losses")
    q, pool, tags, pool_tags = fx["lil_q"], fx["lil_pool"], fx["lil_tags"], fx["lil_pool_tags"]
    ours, ours_tags, rectified = losses.lil_loss(q, pool, tags, pool_tags, 0.08, 0.9)
    assert math.isclose(float(ours), float(spec_lil(q, pool, tags, pool_tags, 0.08)), rel_tol=1e-5)
    ref_value, ref_tags = reference_lil(q, pool, tags, pool_tags, 0.08)
    assert math.isclose(ref_value, float(fx["lil"]), rel_tol=1e-4, abs_tol=1e-6)
    assert torch.equal(ref_tags, fx["lil_revised"])
    # On this case no tag is rectified by either rule; the loss values differ by a factor ~40.
    assert int(rectified) == 0 and torch.equal(ours_tags, tags) and torch.equal(fx["lil_revised"], tags)
    assert float(ours) > 10 * float(fx["lil"]) > 0


def test_rectification_departs_as_documented() -> None:
    # Case 0: the anchor's pool is 100 keys of its own tag, 96 of them far: both rules fire; the
    # reference sets the tag to 0 (background), we set it to -1 (excluded, SPEC 2.8).
    # Case 1: 20 keys of its tag (19 far) among 80 of another: 95 % of its positives lie below
    # their mean, so ours fires (sigma 0.9); the reference counts the 80 zeros of the other
    # tag as "at or above the mean" and does not.
    fx = load("losses")
    expected_ours, expected_ref = [-1, -1], [0, 2]
    for i in range(2):
        q, pool, tags, pool_tags = fx["rect_q"][i], fx["rect_pool"][i], fx["rect_tags"][i], fx["rect_pool_tags"][i]
        _, ours_tags, rectified = losses.lil_loss(q, pool, tags, pool_tags, 0.08, 0.9)
        assert ours_tags.tolist() == [expected_ours[i]] and int(rectified) == 1
        assert fx["rect_revised"][i].tolist() == [expected_ref[i]]
        assert reference_lil(q, pool, tags, pool_tags, 0.08)[1].tolist() == [expected_ref[i]]
        # ours is SPEC 2.8: the fraction of positives below their mean similarity exceeds sigma.
        sims = pool @ q[0]
        positives = sims[pool_tags == tags[0]]
        assert float((positives < positives.mean()).float().mean()) > 0.9


# ---------------------------------------------------------------------------- LiG, PTC, seg
def test_lig_matches() -> None:
    fx = load("losses")
    q = fx["lil_q"].clone().requires_grad_(True)
    ours = losses.lig_loss(q, fx["lig_prototypes"], fx["lil_tags"], 0.1)
    ours.backward()
    assert math.isclose(float(ours.detach()), float(fx["lig"]), rel_tol=1e-5)
    assert max_abs(q.grad, fx["lig_grad"]) < 1e-6


def test_ptc_matches_up_to_the_reference_smoothing_of_its_means() -> None:
    # Departure: the reference divides each half's sum by (pairs + 1); we take the mean (SPEC
    # 2.9). On 2 x 42 cells the loss differs by 7e-5 and the gradient by ~0.1 %.
    fx = load("losses")
    feats = fx["ptc_feats"].clone().requires_grad_(True)
    label = fx["ptc_label"].long()
    ours = losses.ptc_loss(feats, label)
    ours.backward()
    assert abs(float(ours.detach()) - float(fx["ptc"])) < 2e-4
    assert max_abs(feats.grad, fx["ptc_grad"]) < 2e-3 * float(fx["ptc_grad"].abs().max())
    # The reference's value, restated with its +1: exactly the fixture.
    b, d, h, w = feats.shape
    x = F.normalize(fx["ptc_feats"].reshape(b, d, -1), dim=1, eps=1e-8)
    cos = (x.transpose(1, 2) @ x).abs()
    lab = label.reshape(b, -1)
    ok = (lab != IGNORE)[:, :, None] & (lab != IGNORE)[:, None, :] & ~torch.eye(h * w, dtype=torch.bool)
    same = lab[:, :, None] == lab[:, None, :]
    pos, neg = ok & same, ok & ~same
    ref = 0.5 * (1 - cos[pos].sum() / (pos.sum() + 1)) + 0.5 * cos[neg].sum() / (neg.sum() + 1)
    assert math.isclose(float(ref), float(fx["ptc"]), rel_tol=1e-5)


def test_balanced_seg_loss_matches() -> None:
    fx = load("losses")
    logits = fx["seg_logits"].clone().requires_grad_(True)
    ours = losses.balanced_seg_loss(logits, fx["seg_label"].long())
    ours.backward()
    assert math.isclose(float(ours.detach()), float(fx["seg"]), rel_tol=1e-5)
    assert max_abs(logits.grad, fx["seg_grad"]) < 1e-7


# ---------------------------------------------------------------------------- CRF regulariser
def _crf_case(fx, i: int) -> dict:
    n, h, w = fx.meta["sizes"][i]
    logits = F.interpolate(fx[f"c{i}_logits_low"], size=(h, w), mode="bilinear", align_corners=False)
    inside = torch.zeros(n, h, w)
    for b, (y0, y1, x0, x1) in enumerate(fx[f"c{i}_img_box"].tolist()):
        inside[b, y0:y1, x0:x1] = 1
    return {"rgb": fx[f"c{i}_image_u8"].float(), "logits": logits, "inside": inside,
            "unlabeled": fx[f"c{i}_label"].long() == IGNORE, "image": normalise(fx[f"c{i}_image_u8"])}


def exact_dense_energy(case: dict, sigma_rgb: float = 15.0, sigma_xy: float = 100.0, scale: float = 0.5,
                       weight: float = 1e-7) -> float:
    """The reference's energy with the Gaussian kernel evaluated exactly (float64, every pair)."""
    img = F.interpolate(case["rgb"], scale_factor=scale, mode="nearest", recompute_scale_factor=True).double()
    p = F.interpolate(torch.softmax(case["logits"], 1), scale_factor=scale, mode="bilinear", align_corners=False,
                      recompute_scale_factor=True).double()
    roi = F.interpolate(case["inside"][:, None], scale_factor=scale, mode="nearest", recompute_scale_factor=True)
    unl = F.interpolate(case["unlabeled"].float()[:, None], scale_factor=scale, mode="nearest",
                        recompute_scale_factor=True) > 0.5
    gate = (roi.double() - p.amax(1, keepdim=True)).masked_fill(unl, 1.0).clamp(min=0)
    s = p * roi.double()
    n, k, h, w = s.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], 1) / (sigma_xy * scale)
    total = 0.0
    for b in range(n):
        f = torch.cat([pos, img[b].flatten(1).T / sigma_rgb], 1)
        kernel = torch.exp(-0.5 * torch.cdist(f, f) ** 2)
        sb = s[b].flatten(1)
        total += float(((sb * gate[b].flatten()) @ kernel * sb).sum())
    return -weight * total / n


def test_crf_energy_is_the_exact_dense_energy_at_cell_factor_1() -> None:
    fx = load("crf")
    for i in (0, 1):  # 32 x 32 and 48 x 64 points after the 0.5 scale: f = 1 at 4096 points
        case = _crf_case(fx, i)
        ours = losses.crf_energy_loss(case["rgb"], torch.softmax(case["logits"], 1), case["inside"],
                                      case["unlabeled"], max_points=4096)
        assert math.isclose(float(ours), exact_dense_energy(case), rel_tol=1e-4)


def test_crf_energy_against_the_reference_bilateral_filter() -> None:
    # Departure (SPEC 2.9 asks for a pure-PyTorch approximation): the reference filters with a
    # permutohedral lattice, whose kernel carries roughly half the mass of the exact Gaussian it
    # approximates. Measured: our (exact) energy is 1.8-2.2x the reference's, the gradients point
    # the same way (cosine >= 0.96). The gradient also differs on purpose: ours is the exact
    # gradient of the energy with the gate fixed, the reference's is -2 g W s.
    fx = load("crf")
    ratios = []
    for i in range(len(fx.meta["sizes"])):
        case = _crf_case(fx, i)
        logits = case["logits"].clone().requires_grad_(True)
        ours = losses.crf_energy_loss(case["rgb"], torch.softmax(logits, 1), case["inside"], case["unlabeled"],
                                      max_points=4096)
        ours.backward()
        ref = float(fx[f"c{i}_loss"])
        value = float(ours.detach())
        assert ref < 0 and value < 0
        ratios.append(value / ref)
        if f"c{i}_grad" in fx:
            cos = F.cosine_similarity(logits.grad.flatten(), fx[f"c{i}_grad"].flatten(), dim=0)
            assert float(cos) > 0.95
    assert all(1.5 < r < 2.5 for r in ratios), ratios
