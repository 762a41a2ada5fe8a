"""Fully connected CRF (Krähenbühl and Koltun, 2011) for refining masks at inference.

Model: labels x_i over K classes with the energy
``E(x) = sum_i U_i(x_i) + sum_{i<j} [x_i != x_j] (w_pos k_pos(i, j) + w_bi k_bi(i, j))``,
``U_i(l) = -log max(p_i(l), 1e-5)``, ``k_pos = exp(-|p_i - p_j|^2 / 2 s_xy^2)`` and
``k_bi = exp(-|p_i - p_j|^2 / 2 b_xy^2 - |I_i - I_j|^2 / 2 b_rgb^2)``.
Mean-field inference: ``Q <- softmax(-U)``, then ``iters`` times
``Q <- softmax(-U + sum_k w_k n_k * K_k(n_k * Q))`` where ``K_k`` is the Gaussian filter of kernel
k (the pixel itself included) and ``n_k = 1 / sqrt(K_k 1)`` its symmetric normalisation.

Two implementations with this one contract:

- ``pydensecrf2`` (PyPI, optional extra ``crf``; a C++ permutohedral lattice) when it imports;
- otherwise a pure-PyTorch mean field on a permutohedral lattice (:class:`PermutohedralLattice`,
  Adams, Baek and Davis, 2010): the same splat / blur / slice algorithm, vectorised with
  integer lattice keys, sorting and ``searchsorted``; it runs on the input's device.

Both give the same labels up to the lattice's floating-point differences (checked by the tests
when both are present). Parameters: :data:`MASK_CRF` are method §3.3's (10 iterations, Gaussian
weight 1 / xy 1, bilateral weight 4 / xy 121 / rgb 5); :data:`LABEL_CRF` are the reference's
for refining a CAM label map (unary from labels with ``gt_prob`` 0.7, Gaussian 3 / 3, bilateral
10 / 50 / 5).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "LABEL_CRF",
    "MASK_CRF",
    "CRFParams",
    "PermutohedralLattice",
    "crf_implementation",
    "dense_crf",
    "dense_crf_torch",
    "probs_from_labels",
]


@dataclass(frozen=True)
class CRFParams:
    """Mean-field iterations and kernel parameters (weights, standard deviations in px / levels)."""

    iters: int = 10
    pos_w: float = 1.0
    pos_xy_std: float = 1.0
    bi_w: float = 4.0
    bi_xy_std: float = 121.0
    bi_rgb_std: float = 5.0


MASK_CRF = CRFParams()
LABEL_CRF = CRFParams(iters=10, pos_w=3.0, pos_xy_std=3.0, bi_w=10.0, bi_xy_std=50.0, bi_rgb_std=5.0)
_CLIP = 1e-5


def crf_implementation(prefer: str = "auto") -> str:
    """``"pydensecrf2"`` when ``prefer`` allows it and the package imports, else ``"torch"``."""
    if prefer not in ("auto", "pydensecrf2", "torch"):
        raise ValueError(f"CRF implementation {prefer!r}; choose auto, pydensecrf2 or torch")
    if prefer == "torch":
        return "torch"
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        if prefer == "pydensecrf2":
            raise ImportError("pydensecrf2 is not installed; `pip install 'seco-deploy[crf]'`") from None
        return "torch"
    return "pydensecrf2"


def probs_from_labels(labels: torch.Tensor, num_labels: int, gt_prob: float = 0.7) -> torch.Tensor:
    """(H, W) long labels -> (K, H, W) probabilities: ``gt_prob`` on the label, the rest shared."""
    rest = (1.0 - gt_prob) / max(num_labels - 1, 1)
    probs = torch.full((num_labels, *labels.shape), rest, dtype=torch.float32, device=labels.device)
    probs.scatter_(0, labels[None].long(), gt_prob)
    return probs


def dense_crf(
    image: np.ndarray | torch.Tensor,
    probs: np.ndarray | torch.Tensor,
    params: CRFParams = MASK_CRF,
    implementation: str = "auto",
) -> torch.Tensor:
    """Refine class probabilities ``probs`` (K, H, W) with a dense CRF on ``image`` (H, W, 3) uint8.

    Returns the mean-field marginals Q (K, H, W) float32, on ``probs``' device when it is a
    tensor. ``implementation``: ``auto`` (pydensecrf2 if installed, else PyTorch), ``torch``,
    ``pydensecrf2``.
    """
    device = probs.device if isinstance(probs, torch.Tensor) else torch.device("cpu")
    if crf_implementation(implementation) == "pydensecrf2":
        img = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        p = probs.detach().float().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs, np.float32)
        return torch.from_numpy(_dense_crf_pydensecrf(img, p, params)).to(device)
    img_t = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image, device=device)
    p_t = torch.as_tensor(probs, device=device).float()
    return dense_crf_torch(img_t, p_t, params)


def _dense_crf_pydensecrf(image: np.ndarray, probs: np.ndarray, params: CRFParams) -> np.ndarray:
    import pydensecrf.densecrf as dcrf

    k, h, w = probs.shape
    unary = np.ascontiguousarray(-np.log(np.clip(probs, _CLIP, 1.0)).reshape(k, -1).astype(np.float32))
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=params.pos_xy_std, compat=params.pos_w)
    crf.addPairwiseBilateral(
        sxy=params.bi_xy_std, srgb=params.bi_rgb_std, rgbim=np.ascontiguousarray(image, dtype=np.uint8),
        compat=params.bi_w,
    )
    q = crf.inference(params.iters)
    return np.asarray(q, dtype=np.float32).reshape(k, h, w)


def dense_crf_torch(image: torch.Tensor, probs: torch.Tensor, params: CRFParams = MASK_CRF) -> torch.Tensor:
    """Pure-PyTorch mean field (see the module docstring); ``image`` (H, W, 3), ``probs`` (K, H, W)."""
    k, h, w = probs.shape
    if image.shape[:2] != (h, w):
        raise ValueError(f"image {tuple(image.shape)} and probabilities {tuple(probs.shape)} differ in size")
    device = probs.device
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    xy = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)
    rgb = image.reshape(-1, 3).to(device=device, dtype=torch.float32)
    kernels = []
    if params.pos_w != 0:
        kernels.append((params.pos_w, PermutohedralLattice(xy / params.pos_xy_std)))
    if params.bi_w != 0:
        feats = torch.cat([xy / params.bi_xy_std, rgb / params.bi_rgb_std], dim=1)
        kernels.append((params.bi_w, PermutohedralLattice(feats)))
    norms = [torch.rsqrt(lat.filter(torch.ones(h * w, 1, device=device)) + 1e-20) for _, lat in kernels]
    unary = -torch.log(probs.float().clamp(_CLIP, 1.0)).reshape(k, -1).t()  # (N, K)
    q = torch.softmax(-unary, dim=1)
    for _ in range(params.iters):
        energy = -unary
        for (weight, lattice), norm in zip(kernels, norms, strict=True):
            energy = energy + weight * norm * lattice.filter(norm * q)
        q = torch.softmax(energy, dim=1)
    return q.t().reshape(k, h, w).contiguous()


class PermutohedralLattice:
    """Gaussian filtering ``out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j`` (approximately, up to a
    constant factor) over features ``f`` (N, d) on the permutohedral lattice.

    Construction embeds each feature in the hyperplane ``H_d`` of Z^(d+1) (scaled so the blur
    below has unit standard deviation), finds the enclosing simplex (its d + 1 vertices, the
    point's barycentric weights), and indexes the distinct vertices. :meth:`filter` splats
    values onto the vertices with those weights, blurs with the kernel (1/2, 1, 1/2) along each
    of the d + 1 lattice directions, and slices back with the same weights.
    """

    def __init__(self, features: torch.Tensor) -> None:
        f = features.to(torch.float64)
        n, d = f.shape
        device = f.device
        self.n, self.d = n, d
        idx = torch.arange(d, device=device, dtype=torch.float64)
        scale = math.sqrt(2.0 / 3.0) * (d + 1) / torch.sqrt((idx + 2) * (idx + 1))
        cf = f * scale  # (N, d)
        # Elevate: e_0 = sum_k cf_k, e_j = sum_{k >= j} cf_k - j cf_{j-1} (j = 1..d).
        suffix = torch.flip(torch.cumsum(torch.flip(cf, [1]), 1), [1])  # S_j = sum_{k >= j} cf_k
        suffix = torch.cat([suffix, torch.zeros(n, 1, device=device, dtype=f.dtype)], dim=1)
        j = torch.arange(1, d + 1, device=device, dtype=torch.float64)
        elevated = torch.cat([suffix[:, :1], suffix[:, 1:] - j * cf], dim=1)  # (N, d+1)
        # Nearest remainder-0 point, then the rank of each coordinate's residual.
        v = torch.round(elevated / (d + 1))
        rem0 = v * (d + 1)
        total = v.sum(1, keepdim=True)
        diff = elevated - rem0
        less = diff[:, :, None] < diff[:, None, :]  # less[i, j] = diff_i < diff_j
        upper = torch.ones(d + 1, d + 1, dtype=torch.bool, device=device).triu(1)
        rank = (less & upper).sum(2) + ((~less) & upper).sum(1)
        rank = rank.to(torch.float64) + total
        under, over = rank < 0, rank >= d + 1
        rank = rank + (d + 1) * under - (d + 1) * over
        rem0 = rem0 + (d + 1) * under - (d + 1) * over
        # Barycentric weights.
        bary = torch.zeros(n, d + 2, device=device, dtype=torch.float64)
        vals = (elevated - rem0) / (d + 1)
        pos = (d - rank).long()
        bary.scatter_add_(1, pos, vals)
        bary.scatter_add_(1, pos + 1, -vals)
        bary[:, 0] += 1 + bary[:, d + 1]
        weights = bary[:, : d + 1].to(torch.float32)  # (N, d+1)
        # Vertex keys (first d coordinates): rem0_i + canonical[r][rank_i].
        r = torch.arange(d + 1, device=device)
        rank_l = rank.long()[:, None, :d]  # (N, 1, d)
        canon = torch.where(rank_l <= d - r[None, :, None], r[None, :, None], r[None, :, None] - (d + 1))
        keys = rem0.long()[:, None, :d] + canon  # (N, d+1, d)
        low = keys.reshape(-1, d).amin(0) - (d + 1)
        high = keys.reshape(-1, d).amax(0) + (d + 1)
        radix = high - low + 1
        if float(torch.prod(radix.double())) >= 2.0**62:
            raise ValueError("the CRF lattice is too large to index; use larger standard deviations")
        self._low, self._radix = low, radix
        self._mult = torch.ones(d, dtype=torch.long, device=device)
        for i in range(d - 2, -1, -1):
            self._mult[i] = self._mult[i + 1] * radix[i + 1]
        codes = self._encode(keys)  # (N, d+1)
        lattice_codes, inverse = torch.unique(codes.reshape(-1), sorted=True, return_inverse=True)
        m = lattice_codes.numel()
        self.m = m
        alpha = 1.0 / (1.0 + 2.0 ** (-d))
        # Slice (N x M): row i holds pixel i's d + 1 vertices (distinct) with its weights.
        inverse = inverse.reshape(n, d + 1)
        self._slice = _csr_from_rows(inverse, weights * alpha, m)
        # Splat (M x N): the transpose, rows grouped by vertex.
        flat_v = inverse.reshape(-1)
        order = torch.argsort(flat_v, stable=True)
        counts = torch.bincount(flat_v, minlength=m)
        crow = torch.zeros(m + 1, dtype=torch.long, device=device)
        crow[1:] = torch.cumsum(counts, 0)
        pixel = torch.arange(n, device=device).repeat_interleave(d + 1)
        self._splat = _csr_tensor(crow, pixel[order], weights.reshape(-1)[order], (m, n))
        # Blur along lattice direction j: the vertex itself plus half of its neighbours
        # key - 1 (+ (d+1) at j) and key + 1 (- (d+1) at j), where they exist.
        lattice_keys = self._decode(lattice_codes)  # (M, d)
        ids = torch.arange(m, device=device)
        self._blurs = []
        for axis in range(d + 1):
            step = torch.ones(d, dtype=torch.long, device=device)
            if axis < d:
                step[axis] = -d
            cols = [ids]
            for sign in (-1, 1):
                code = self._encode(lattice_keys + sign * step)
                where = torch.searchsorted(lattice_codes, code).clamp(max=m - 1)
                cols.append(torch.where(lattice_codes[where] == code, where, torch.full_like(where, -1)))
            col = torch.stack(cols, dim=1)  # (M, 3), -1 = no neighbour
            val = torch.tensor([1.0, 0.5, 0.5], device=device).expand(m, 3)
            self._blurs.append(_csr_from_rows(col, val, m))

    def _encode(self, keys: torch.Tensor) -> torch.Tensor:
        return ((keys - self._low) * self._mult).sum(-1)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        out = torch.empty(codes.shape[0], self.d, dtype=torch.long, device=codes.device)
        rest = codes.clone()
        for i in range(self.d - 1, -1, -1):
            out[:, i] = rest % self._radix[i] + self._low[i]
            rest = rest // self._radix[i]
        return out

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Filter ``values`` (N, K) float32 -> (N, K): slice(blur_d(...blur_0(splat(values))))."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            grid = self._splat @ values
            for blur in self._blurs:
                grid = blur @ grid
            return self._slice @ grid


def _csr_tensor(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, val.to(torch.float32).contiguous(), size, check_invariants=False)


def _csr_from_rows(cols: torch.Tensor, vals: torch.Tensor, width: int) -> torch.Tensor:
    """CSR (R x width) from per-row column lists ``cols`` (R, k) (-1 = absent, distinct otherwise)."""
    sorted_cols, order = torch.sort(cols, dim=1)
    sorted_vals = torch.gather(vals, 1, order)
    present = sorted_cols >= 0
    crow = torch.zeros(cols.shape[0] + 1, dtype=torch.long, device=cols.device)
    crow[1:] = torch.cumsum(present.sum(1), 0)
    return _csr_tensor(crow, sorted_cols[present], sorted_vals[present], (cols.shape[0], width))
