"""Locality initialisation of the ViT (mimetic attention, 2-D sine-cosine positions)."""

from __future__ import annotations

import pytest
import torch

from seco_deploy.model.backbone import ViTBackbone
from seco_deploy.model.init import locality_init_, mimetic_init_, sincos_pos_embed_, sincos_table

TINY = {"depth": 2, "embed_dim": 32, "num_heads": 2}


def _vit() -> torch.nn.Module:
    return ViTBackbone("vit_tiny_patch16_224", aux_layer=-1, **TINY).vit


def test_mimetic_products_approximate_their_targets() -> None:
    vit = _vit()
    g = torch.Generator().manual_seed(0)
    mimetic_init_(vit, g, alpha1=0.0, beta1=1.0, alpha2=0.0, beta2=0.5)  # Z off: targets are I and -I / 2
    d, k = 32, 16
    for block in vit.blocks:
        w = block.attn.qkv.weight.detach()
        for h in range(2):
            q, key = w[h * k:(h + 1) * k], w[d + h * k:d + (h + 1) * k]
            product = q.T @ key  # rank k: a projection onto k directions
            assert torch.allclose(product @ product, product, atol=1e-5)
            assert torch.allclose(torch.diagonal(product).sum(), torch.tensor(float(k)), atol=1e-4)
        values = w[2 * d:].T @ block.attn.proj.weight.detach().T
        assert torch.allclose(values, -0.5 * torch.eye(d), atol=1e-5)


def test_mimetic_default_is_seeded_and_keeps_the_forward_finite() -> None:
    backbone = ViTBackbone("vit_tiny_patch16_224", aux_layer=-1, **TINY)
    a, b = backbone.vit, _vit()
    mimetic_init_(a, torch.Generator().manual_seed(3))
    mimetic_init_(b, torch.Generator().manual_seed(3))
    assert torch.equal(a.blocks[1].attn.qkv.weight, b.blocks[1].attn.qkv.weight)
    w = a.blocks[0].attn.qkv.weight.detach()
    assert torch.diagonal(w[:16].T @ w[32:48]).mean() > 0.1  # attention favours similar tokens
    assert all(torch.isfinite(t).all() for t in backbone(torch.randn(2, 3, 64, 64)))


def test_sincos_table_rows_and_columns() -> None:
    table = sincos_table(4, 8).view(4, 4, 8)
    assert torch.allclose(table[:, 0, :4], table[:, 3, :4])  # first half: the row only
    assert torch.allclose(table[0, :, 4:], table[3, :, 4:])  # second half: the column only
    assert torch.allclose(table[0, 0], torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1], dtype=table.dtype))
    near = torch.cosine_similarity(table[1, 1], table[1, 2], dim=0)
    far = torch.cosine_similarity(table[1, 1], table[3, 3], dim=0)
    assert near > far
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_table(4, 6)


def test_positions_and_locality_init_set_the_vit() -> None:
    vit = _vit()
    sincos_pos_embed_(vit)
    pe = vit.pos_embed.detach()[0]
    assert torch.all(pe[0] == 0) and torch.allclose(pe[1:], sincos_table(14, 32).float())
    locality_init_(vit, torch.Generator().manual_seed(0))
    assert torch.allclose(vit.pos_embed.detach()[0, 1:], sincos_table(14, 32).float())
