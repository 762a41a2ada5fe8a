"""ViTBackbone: outputs, positional-embedding resampling, tracing, strict weight loading."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from _model_helpers import TINY_VIT, single_thread  # noqa: F401

from seco_deploy.model.backbone import ViTBackbone, WeightLoadError, load_weights


def _tiny(**kw) -> ViTBackbone:
    torch.manual_seed(0)
    return ViTBackbone("vit_tiny_patch16_224", **{**TINY_VIT, **kw}).eval()


def test_outputs_match_timm_at_native_size_and_aux_is_before_norm() -> None:
    bb = _tiny(aux_layer=-2)
    x = torch.randn(2, 3, 224, 224)
    cls, feats, aux = bb(x)
    tokens = bb.vit.forward_features(x)  # timm's own path: patch embed + pos embed + blocks + norm
    assert torch.allclose(cls, tokens[:, 0], atol=1e-5)
    assert feats.shape == (2, 32, 14, 14)
    assert torch.allclose(feats.flatten(2).transpose(1, 2), tokens[:, 1:], atol=1e-5)
    # aux_layer -2 of 3 blocks = output of block index 1, no final norm
    h = bb.vit._pos_embed(bb.vit.patch_embed(x))
    h = bb.vit.blocks[1](bb.vit.blocks[0](h))
    assert torch.allclose(aux.flatten(2).transpose(1, 2), h[:, 1:], atol=1e-5)


def test_any_size_multiple_of_patch_and_bicubic_pos_embed_without_antialias() -> None:
    bb = _tiny()
    pos = bb.resized_pos_embed(3, 5)
    grid = bb.vit.pos_embed[:, 1:].reshape(1, 14, 14, 32).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(3, 5), mode="bicubic", align_corners=False, antialias=False)
    assert torch.allclose(pos[:, 1:], expected.flatten(2).transpose(1, 2))
    assert torch.equal(pos[:, :1], bb.vit.pos_embed[:, :1])
    antialiased = F.interpolate(grid, size=(3, 5), mode="bicubic", align_corners=False, antialias=True)
    assert not torch.allclose(pos[:, 1:], antialiased.flatten(2).transpose(1, 2))
    cls, feats, aux = bb(torch.randn(1, 3, 48, 80))
    assert cls.shape == (1, 32) and feats.shape == (1, 32, 3, 5) and aux.shape == (1, 32, 3, 5)


def test_trace_at_one_size_runs_at_another() -> None:
    bb = _tiny()

    class Feats(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bb = bb

        def forward(self, x):
            return self.bb(x)[1]

    with pytest.warns(Warning):  # torch.jit.trace is deprecated; still the legacy exporter's tracer
        traced = torch.jit.trace(Feats(), torch.randn(1, 3, 64, 64))
    x = torch.randn(2, 3, 32, 96)
    assert torch.allclose(traced(x), bb(x)[1], atol=1e-5)


def test_pos_embed_frozen_by_default() -> None:
    assert not _tiny().vit.pos_embed.requires_grad
    assert _tiny(freeze_pos_embed=False).vit.pos_embed.requires_grad


def _reference_vit() -> torch.nn.Module:
    torch.manual_seed(1)
    return timm.create_model("vit_tiny_patch16_224", num_classes=5, **TINY_VIT)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_file_loads_back_exactly(tmp_path, suffix: str) -> None:
    src = _reference_vit()
    path = tmp_path / f"w{suffix}"
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    bb = ViTBackbone("vit_tiny_patch16_224", pretrained=str(path), **TINY_VIT)
    for k, v in bb.vit.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert "head.weight" in sd  # the classifier head of the file is dropped, not an error


def test_original_deit_and_linear_patch_layouts_are_converted(tmp_path) -> None:
    src = _reference_vit()
    sd = dict(src.state_dict())
    conv_w = sd["patch_embed.proj.weight"]
    sd["patch_embed.proj.weight"] = conv_w.reshape(conv_w.shape[0], -1)  # pre-conv timm layout
    path = tmp_path / "deit.pth"
    torch.save({"model": sd, "epoch": 3}, path)  # DeiT wraps its weights in "model"
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, global_pool="", **TINY_VIT)
    load_weights(vit, path)
    assert torch.equal(vit.patch_embed.proj.weight, conv_w)
    assert torch.equal(vit.blocks[2].mlp.fc2.weight, src.blocks[2].mlp.fc2.weight)


def test_missing_key_is_an_error_naming_it(tmp_path) -> None:
    sd = dict(_reference_vit().state_dict())
    del sd["blocks.1.attn.qkv.weight"]
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(WeightLoadError, match=r"missing keys: blocks\.1\.attn\.qkv\.weight"):
        ViTBackbone("vit_tiny_patch16_224", pretrained=str(path), **TINY_VIT)


def test_unexpected_keys_are_errors(tmp_path) -> None:
    sd = dict(_reference_vit().state_dict())
    sd["dist_token"] = torch.zeros(1, 1, 32)
    path = tmp_path / "other.pth"
    torch.save(sd, path)
    with pytest.raises(WeightLoadError, match="unexpected keys: dist_token"):
        ViTBackbone("vit_tiny_patch16_224", pretrained=str(path), **TINY_VIT)


def test_shape_mismatch_is_an_error_naming_the_key(tmp_path) -> None:
    path = tmp_path / "narrow.pth"
    torch.save(dict(_reference_vit().state_dict()), path)  # width 32
    with pytest.raises(WeightLoadError, match=r"shape mismatches: .*blocks\.0\.attn\.proj\.weight \(file \(32, 32\)"):
        ViTBackbone("vit_tiny_patch16_224", pretrained=str(path), depth=3, embed_dim=48, num_heads=2)


def test_missing_file_is_reported() -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ViTBackbone("vit_tiny_patch16_224", pretrained="/nonexistent/w.safetensors", **TINY_VIT)


def test_backbone_without_class_token_is_refused() -> None:
    with pytest.raises(ValueError, match="class token"):
        ViTBackbone("vit_tiny_patch16_224", class_token=False, global_pool="avg", **TINY_VIT)
