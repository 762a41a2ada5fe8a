"""Initialisations of a timm VisionTransformer that train faster from scratch on small data.

``mimetic_init_(vit, generator)`` (Trockman and Kolter, "Mimetic initialization of self-attention
layers", ICML 2023) sets, in every block, the attention weights so that

    W_q^T W_k ~= alpha_1 Z_1 + beta_1 I     (per head, the best rank-k approximation, k = head dim)
    W_v^T W_o^T ~= alpha_2 Z_2 - beta_2 I   (all heads together)

with ``Z ~ N(0, 1/D)`` (D the width) and ``W_q``, ``W_k``, ``W_v`` the (k, D) or (D, D) blocks of
the ``qkv`` Linear, ``W_o`` the ``proj`` Linear (PyTorch's ``y = x W^T`` layout). A pretrained ViT's
attention has this structure: a token attends to tokens like itself, and the mixed values are
partly subtracted from the residual. With it, attention starts out as a similarity filter
instead of a random one. The SVD factors are split evenly: ``M = U S V^T`` gives ``U S^1/2`` and
``V S^1/2``. Defaults are the paper's: alpha_1 = beta_1 = 0.7, alpha_2 = beta_2 = 0.4.

``sincos_pos_embed_(vit)`` sets the positional embedding to the fixed 2-D sine-cosine table of
MAE (half the channels encode the row, half the column, frequencies ``1 / 10000^(2i/(D/2))``; the
class token's entry is 0), so that neighbouring patches start with similar positions and
attention that compares tokens is local at first. The table stays trainable.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["locality_init_", "mimetic_init_", "sincos_pos_embed_"]


def _factor(m: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, B)``, each (D, rank), with ``A B^T`` the best rank-``rank`` approximation of ``m`` (D, D)."""
    u, s, vh = torch.linalg.svd(m)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, vh[:rank].T * root


@torch.no_grad()
def mimetic_init_(vit: nn.Module, generator: torch.Generator | None = None, alpha1: float = 0.7,
                  beta1: float = 0.7, alpha2: float = 0.4, beta2: float = 0.4) -> None:
    """Set every block's ``attn.qkv`` and ``attn.proj`` weights as in the module doc (biases unchanged)."""
    for block in vit.blocks:
        attn = block.attn
        qkv, proj = attn.qkv.weight, attn.proj.weight  # (3D, D), (D, D)
        d = proj.shape[0]
        heads = int(attn.num_heads)
        k = d // heads
        eye = torch.eye(d, dtype=torch.float64)
        for h in range(heads):
            z = torch.randn(d, d, generator=generator, dtype=torch.float64) / d**0.5
            a, b = _factor(alpha1 * z + beta1 * eye, k)
            qkv[h * k:(h + 1) * k] = a.T.to(qkv.dtype)  # W_q rows of head h
            qkv[d + h * k:d + (h + 1) * k] = b.T.to(qkv.dtype)  # W_k rows of head h
        z = torch.randn(d, d, generator=generator, dtype=torch.float64) / d**0.5
        a, b = _factor(alpha2 * z - beta2 * eye, d)
        qkv[2 * d:] = a.T.to(qkv.dtype)  # W_v: x W_v^T W_o^T = x a b^T
        proj.copy_(b.to(proj.dtype))


def sincos_table(grid: int, dim: int) -> torch.Tensor:
    """(grid * grid, dim): the 2-D sine-cosine table of the module doc, rows in raster order."""
    if dim % 4:
        raise ValueError(f"a 2-D sine-cosine table needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    pos = torch.arange(grid, dtype=torch.float64)
    angles = pos[:, None] * omega[None]  # (grid, quarter)
    axis = torch.cat([angles.sin(), angles.cos()], dim=1)  # (grid, dim / 2)
    rows = axis[:, None, :].expand(grid, grid, dim // 2)
    cols = axis[None, :, :].expand(grid, grid, dim // 2)
    return torch.cat([rows, cols], dim=2).reshape(grid * grid, dim)


@torch.no_grad()
def sincos_pos_embed_(vit: nn.Module) -> None:
    """Set ``vit.pos_embed`` (1, prefix + G*G, D) to the table of the module doc, prefix tokens at 0."""
    pe = vit.pos_embed
    prefix = int(getattr(vit, "num_prefix_tokens", 1))
    tokens, dim = pe.shape[1] - prefix, pe.shape[2]
    grid = int(round(tokens**0.5))
    if grid * grid != tokens:
        raise ValueError(f"positional embedding of {tokens} patch tokens is not a square grid")
    pe.zero_()
    pe[0, prefix:] = sincos_table(grid, dim).to(pe.dtype)


def locality_init_(vit: nn.Module, generator: torch.Generator | None = None) -> None:
    """:func:`mimetic_init_` and :func:`sincos_pos_embed_` together."""
    mimetic_init_(vit, generator)
    sincos_pos_embed_(vit)
