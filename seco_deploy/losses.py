"""The SeCo losses (method §2.8, §2.10) as pure, vectorised tensor functions.

Every loss is computed in float32 (also under autocast) and returns a 0-dim tensor. When a loss
has nothing valid to work on (no anchors, no positives, every pixel ignored) it returns exactly
0 that still depends on its inputs (``x.sum() * 0``), so ``backward`` works and gives zero
gradients. Tags: -1 excluded/ambiguous, 0 background, c in 1..C a class.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_MASKED = -1e9  # logit for excluded entries: finite, so no NaN appears in empty rows


def _zero(*tensors: torch.Tensor) -> torch.Tensor:
    """Exactly 0 with a gradient path to ``tensors``."""
    total = tensors[0].float().sum() * 0.0
    for t in tensors[1:]:
        total = total + t.float().sum() * 0.0
    return total


def _no_autocast(device_type: str):
    return torch.autocast(device_type=device_type, enabled=False)


# ---------------------------------------------------------------------------- classification
def multilabel_soft_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``mean_{n,c} -[y log s(x) + (1 - y) log s(-x)]`` (``F.multilabel_soft_margin_loss``)."""
    return F.multilabel_soft_margin_loss(logits.float(), labels.float())


# ---------------------------------------------------------------------------- tag-guided contrast
def _rectify_from_sims(
    sims: torch.Tensor, tags: torch.Tensor, pool_tags: torch.Tensor, sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    pos = (tags[:, None] == pool_tags[None, :]) & (tags[:, None] > 0)
    npos = pos.sum(1)
    mean = torch.where(pos, sims, 0.0).sum(1) / npos.clamp(min=1)
    below = (pos & (sims < mean[:, None])).sum(1)
    noisy = (npos > 0) & (below.float() > sigma * npos.float())
    return torch.where(noisy, torch.full_like(tags, -1), tags), noisy.sum()


@torch.no_grad()
def rectify_tags(
    q: torch.Tensor, pool: torch.Tensor, tags: torch.Tensor, pool_tags: torch.Tensor, sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tag rectification (method §2.8). For each anchor i with tag t_i > 0 and at least one positive
    (pool entry with tag t_i): s_ij = q_i . k_j, mu_i = mean_j s_ij over positives; when the
    fraction of positives with s_ij < mu_i exceeds ``sigma``, the tag becomes -1.
    Returns (revised tags, number rectified as a 0-dim long tensor: no host sync)."""
    with _no_autocast(q.device.type):
        sims = q.detach().float() @ pool.detach().float().T
    return _rectify_from_sims(sims, tags, pool_tags, sigma)


def lil_loss(
    q: torch.Tensor,
    pool: torch.Tensor,
    tags: torch.Tensor,
    pool_tags: torch.Tensor,
    tau: float = 0.08,
    sigma: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local-to-local supervised contrast (method §2.10) with optional rectification (method §2.8).

    ``q`` (A, D) unit anchors with ``tags`` (A,); ``pool`` (P, D) unit keys with ``pool_tags`` (P,)
    (constants: no gradient flows into the pool). With ``sigma`` set, tags are first rectified
    as in :func:`rectify_tags` (sharing the similarity matrix). For each anchor i with
    tag != -1 and each positive j (pool tag == tag_i):
        l_ij = -(q_i . k_j / tau - logsumexp_{l: pool_tag_l != -1} q_i . k_l / tau)
    averaged over i's positives, then over the anchors with at least one positive.
    Returns (loss, revised tags, number rectified (0-dim long tensor)).
    """
    with _no_autocast(q.device.type):
        sims = q.float() @ pool.detach().float().T
        rectified = torch.zeros((), dtype=torch.long, device=q.device)
        if sigma is not None:
            tags, rectified = _rectify_from_sims(sims.detach(), tags, pool_tags, sigma)
        logits = sims / tau
        pool_ok = (pool_tags != -1)[None, :]
        lse = torch.logsumexp(logits.masked_fill(~pool_ok, _MASKED), dim=1, keepdim=True)
        pos = (tags[:, None] == pool_tags[None, :]) & (tags[:, None] != -1) & pool_ok
        npos = pos.sum(1)
        per_anchor = torch.where(pos, logits - lse, 0.0).sum(1) / npos.clamp(min=1)
        has = npos > 0
        count = has.sum()
        loss = torch.where(has, -per_anchor, 0.0).sum() / count.clamp(min=1)
    return loss, tags, rectified


def lig_loss(q: torch.Tensor, prototypes: torch.Tensor, tags: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Local-to-global contrast (method §2.10): for anchors with tag c > 0,
    ``-log softmax_k(q_i . P_k / tau)[c]`` over the prototypes of the classes present among ``tags``;
    averaged over those anchors. ``prototypes`` (C, D) are constants (no gradient)."""
    num_classes = prototypes.shape[0]
    valid = tags > 0
    with _no_autocast(q.device.type):
        logits = q.float() @ prototypes.detach().float().T / tau  # (A, C)
        present = torch.zeros(num_classes + 1, dtype=torch.bool, device=q.device)
        present[tags.clamp(min=0)] = True  # index 0 collects background/ignored tags; dropped below
        logits = logits.masked_fill(~present[1:][None, :], _MASKED)
        logp = torch.log_softmax(logits, dim=1)
        picked = logp.gather(1, (tags.clamp(min=1) - 1)[:, None]).squeeze(1)
        count = valid.sum()
        loss = torch.where(valid, -picked, 0.0).sum() / count.clamp(min=1)
    return loss


# ---------------------------------------------------------------------------- PTC (ToCo)
def ptc_loss(feats: torch.Tensor, label: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Patch token contrast on ``feats`` (B, D, h, w) with a label map (B, h, w) at feature resolution.

    Per image, pairs (i, j), i != j, neither ignored: positive when labels agree, else negative.
    ``0.5 (1 - mean |cos| over positives) + 0.5 mean |cos| over negatives`` (means over all
    images' pairs); a half without pairs contributes 0.
    """
    b = feats.shape[0]
    with _no_autocast(feats.device.type):
        x = F.normalize(feats.float().flatten(2), dim=1, eps=1e-8)  # (B, D, N)
        cos = (x.transpose(1, 2) @ x).abs()  # (B, N, N)
        lab = label.reshape(b, -1)
        ok = lab != ignore_index
        n = lab.shape[1]
        pair_ok = ok[:, :, None] & ok[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=feats.device)
        same = lab[:, :, None] == lab[:, None, :]
        pos, neg = pair_ok & same, pair_ok & ~same
        npos, nneg = pos.sum(), neg.sum()
        pos_term = torch.where(npos > 0, 1.0 - torch.where(pos, cos, 0.0).sum() / npos.clamp(min=1), 0.0)
        neg_term = torch.where(neg, cos, 0.0).sum() / nneg.clamp(min=1)
        loss = 0.5 * pos_term + 0.5 * neg_term
    return loss + _zero(feats)


# ---------------------------------------------------------------------------- segmentation
def balanced_seg_loss(logits: torch.Tensor, label: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy averaged separately over background (label 0) and foreground pixels, then
    ``0.5 (bg + fg)``; an empty half contributes 0 (the reference's ``sum / (count + 1e-6)``).
    ``logits`` (B, C+1, H, W) at the label's resolution."""
    with _no_autocast(logits.device.type):
        ce = F.cross_entropy(logits.float(), label.long(), ignore_index=ignore_index, reduction="none")
        bg = label == 0
        fg = (label != 0) & (label != ignore_index)
        bg_loss = torch.where(bg, ce, 0.0).sum() / bg.sum().clamp(min=1)
        fg_loss = torch.where(fg, ce, 0.0).sum() / fg.sum().clamp(min=1)
    return 0.5 * (bg_loss + fg_loss)


def _kernel_products(feats: torch.Tensor, mats: tuple[torch.Tensor, ...], max_elems: int) -> list[torch.Tensor]:
    """For each image b: ``W_b @ m`` for every ``m`` in ``mats`` ((B, K, P) each), with the dense
    Gaussian kernel ``W_ij = exp(-|f_i - f_j|^2 / 2)`` of per-point features ``feats`` (B, P, F).
    Row blocks of W are built on the fly (at most ``max_elems`` entries at a time), never stored."""
    b, p, _ = feats.shape
    outs = [torch.empty_like(m) for m in mats]
    rows = max(1, max_elems // max(p, 1))
    sq = (feats * feats).sum(-1)  # (B, P)
    for i in range(b):
        for r0 in range(0, p, rows):
            r1 = min(p, r0 + rows)
            d = sq[i, r0:r1, None] + sq[i, None, :] - 2.0 * feats[i, r0:r1] @ feats[i].T
            block = torch.exp(-0.5 * d.clamp_(min=0.0))  # (R, P)
            for m, out in zip(mats, outs, strict=True):
                out[i, :, r0:r1] = m[i] @ block.T
    return outs


class _DenseEnergy(torch.autograd.Function):
    """``E = sum_{b,k} sg_bk . (W_b s_bk)`` with a symmetric kernel W; gradients ``W s`` (for sg) and
    ``W sg`` (for s) are kept from the forward pass, so W is never stored."""

    @staticmethod
    def forward(ctx, sg: torch.Tensor, s: torch.Tensor, feats: torch.Tensor, max_elems: int) -> torch.Tensor:
        w_s, w_sg = _kernel_products(feats, (s, sg), max_elems)
        ctx.save_for_backward(w_s, w_sg)
        return (sg * w_s).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        w_s, w_sg = ctx.saved_tensors
        return grad * w_s, grad * w_sg, None, None


def crf_energy_loss(
    image: torch.Tensor,
    probs: torch.Tensor,
    roi: torch.Tensor,
    unlabeled: torch.Tensor,
    sigma_rgb: float = 15.0,
    sigma_xy: float = 100.0,
    scale: float = 0.5,
    weight: float = 1e-7,
    max_points: int = 4096,
    block_elems: int = 1 << 22,
) -> torch.Tensor:
    """Dense-CRF energy regulariser (method §2.10, after Tang et al.'s DenseEnergyLoss), pure PyTorch.

    Inputs at full resolution: ``image`` (B, 3, H, W) RGB in 0..255, ``probs`` (B, K, H, W) softmax
    of the decoder, ``roi`` (B, H, W) 1 inside the crop box, ``unlabeled`` (B, H, W) bool where the
    pseudo label is 255. As the reference, everything is first resized by ``scale`` (image, box
    and label nearest, probabilities bilinear) and, with ``s = probs * roi`` and the gate
    ``g = roi - max_k probs`` (1 where unlabeled, clamped at 0, no gradient),

        E = -weight / B * sum_k sum_{i,j} s_ik g_i W_ij s_jk,
        W_ij = exp(-|p_i - p_j|^2 / (2 (sigma_xy * scale)^2) - |I_i - I_j|^2 / (2 sigma_rgb^2)).

    Approximation (instead of the reference's compiled permutohedral bilateral filter): W is
    evaluated exactly and densely, on a grid of at most ``max_points`` cells per image. When the
    scaled image has more pixels, it is cut into f x f cells (f = ceil(sqrt(pixels / max_points)));
    each cell's sums of ``s g`` and ``s`` are kept exactly, and W between two cells uses their
    mean colours and centre positions. With f = 1 (small images) the energy is exact. W is built
    in row blocks of ``block_elems`` entries and never stored (memory O(block + B K P)). The
    gradient is the exact gradient of E with g held fixed (the reference uses ``-2 g W s``).
    """
    b, k, h0, w0 = probs.shape
    with _no_autocast(probs.device.type):
        img = F.interpolate(image.float(), scale_factor=scale, mode="nearest", recompute_scale_factor=True)
        p = F.interpolate(probs.float(), scale_factor=scale, mode="bilinear", align_corners=False,
                          recompute_scale_factor=True)
        size = p.shape[-2:]
        img = img[..., : size[0], : size[1]]
        r = F.interpolate(roi.float()[:, None], size=size, mode="nearest")
        unl = F.interpolate(unlabeled.float()[:, None], size=size, mode="nearest") > 0.5
        gate = (r - p.detach().amax(1, keepdim=True)).masked_fill(unl, 1.0).clamp(min=0.0)
        s = p * r
        sg = s * gate
        h, w = size
        f = max(1, math.ceil(math.sqrt(h * w / max_points)))
        if f > 1:
            ph, pw = (-h) % f, (-w) % f
            pad = (0, pw, 0, ph)
            count = F.avg_pool2d(F.pad(torch.ones_like(r), pad), f) * f * f
            s = F.avg_pool2d(F.pad(s, pad), f) * f * f
            sg = F.avg_pool2d(F.pad(sg, pad), f) * f * f
            img = F.avg_pool2d(F.pad(img, pad), f) * f * f / count.clamp(min=1)
            ys = (torch.arange(s.shape[-2], device=s.device, dtype=torch.float32) * f + (f - 1) / 2).clamp(max=h - 1)
            xs = (torch.arange(s.shape[-1], device=s.device, dtype=torch.float32) * f + (f - 1) / 2).clamp(max=w - 1)
        else:
            ys = torch.arange(h, device=s.device, dtype=torch.float32)
            xs = torch.arange(w, device=s.device, dtype=torch.float32)
        pos = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(-1, 2) / (sigma_xy * scale)
        colour = img.flatten(2).transpose(1, 2) / sigma_rgb  # (B, P, 3)
        feats = torch.cat([pos.expand(b, -1, -1), colour], dim=-1)  # (B, P, 5)
        energy = _DenseEnergy.apply(sg.flatten(2), s.flatten(2), feats, block_elems)
        return -weight * energy / b
