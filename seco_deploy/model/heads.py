"""Heads of the SeCo network (method §1.3, §1.4): ASPP segmentation decoder and projection head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ASPPDecoder(nn.Module):
    """Sum of parallel 3x3 convs ``in_dim -> out_dim`` with the given dilations (bias, weights N(0, 0.01)).

    ``forward(F) -> logits`` at the resolution of ``F`` (padding = dilation keeps the size).
    """

    def __init__(self, in_dim: int, out_dim: int, dilations: tuple[int, ...] = (6, 12, 18, 24)) -> None:
        super().__init__()
        if not dilations:
            raise ValueError("model.decoder_dilations must name at least one dilation")
        self.branches = nn.ModuleList(
            nn.Conv2d(in_dim, out_dim, kernel_size=3, padding=d, dilation=d, bias=True) for d in dilations
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out


class ProjectionHead(nn.Module):
    """MLP ``in_dim -> hidden -> hidden -> out_dim`` with GELU; output L2-normalised (DINO-style).

    Linear weights are truncated-normal (std 0.02), biases zero.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, out_dim),
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1)
