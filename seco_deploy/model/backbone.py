"""The ViT encoder of SeCo (method §1.1): a timm VisionTransformer that yields ``cls``, ``F`` and ``F_aux``.

``ViTBackbone(name, pretrained=None, aux_layer=-3, **timm_kwargs)`` wraps ``timm.create_model(name)``
(any VisionTransformer with a class token, e.g. ``vit_base_patch16_224``, ``deit_small_patch16_224``)
and runs it on any input whose sides are multiples of the patch size p:

- the positional embedding's patch grid is resampled to the input's token grid with bicubic
  interpolation, ``align_corners=False`` and *no antialiasing* (as the reference does; it is also
  what the legacy ONNX exporter and TensorRT support). The resampling is always applied, even at
  the native grid (where bicubic resampling is the identity), so a traced graph has no branch;
- ``forward(x) -> (cls (N, D), F (N, D, H/p, W/p), F_aux (N, D, H/p, W/p))`` where ``cls`` is the
  class token after the final norm, ``F`` the patch tokens after the final norm and ``F_aux`` the
  patch tokens after block ``aux_layer`` (negative counts from the end; -3 is the 10th of 12 blocks),
  before the final norm. ``aux_layer = -1`` gives the normed final tokens, as in the reference.

Weights: ``pretrained=None`` keeps timm's random initialisation; a path to a ``.pth``/``.pt``/``.bin``
state dict or a ``.safetensors`` file is loaded with :func:`load_weights`; ``builtin:NAME`` is a
file shipped in :mod:`seco_deploy.assets` (``builtin:vit-tiny-fractal-5k``); any other string is a
timm hub name (``vit_base_patch16_224.orig_in21k_ft_in1k``, ``hf-hub:...``) downloaded by timm.
Loading is strict: a missing, unexpected or mismatched key raises :class:`WeightLoadError` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seco_deploy.assets import builtin_weights, is_builtin

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")

# Keys of a classification checkpoint that the encoder does not use (classifier heads, the
# representation layer of old in21k weights, DeiT's distillation head); dropped without error.
_IGNORED_PREFIXES = ("head.", "head_dist.", "pre_logits.")


class WeightLoadError(ValueError):
    """Pretrained weights do not fit the encoder; the message lists the offending keys."""


def _timm_vit(name: str, **timm_kwargs: Any) -> nn.Module:
    import timm
    from timm.models.vision_transformer import VisionTransformer

    kwargs = dict(timm_kwargs)
    kwargs["num_classes"] = 0
    kwargs.setdefault("global_pool", "")
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as exc:  # timm raises RuntimeError for an unknown model name
        raise ValueError(f"cannot build backbone {name!r}: {exc}; pick a timm VisionTransformer name") from exc
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"backbone {name!r} is a {type(model).__name__}; SeCo needs a timm VisionTransformer (vit_*)")
    if model.cls_token is None:
        raise ValueError(f"backbone {name!r} has no class token; SeCo needs one (pick a vit_*/deit_* with a cls token)")
    if model.pos_embed is None:
        raise ValueError(f"backbone {name!r} has no learned absolute positional embedding")
    return model


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the tensor mapping inside a checkpoint (``model``/``state_dict`` wrappers, ``module.`` prefix)."""
    for key in ("model", "state_dict", "model_state", "module"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise WeightLoadError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise WeightLoadError(f"{path} holds no tensors")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (loaded with ``weights_only=True``)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pretrained weight file {p} does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(p), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise WeightLoadError(f"{p} is not a readable safetensors file: {exc}") from exc
    else:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors, zip errors, unsafe globals
            raise WeightLoadError(
                f"{p} could not be read as a torch state dict with weights_only=True ({exc}); "
                "save it as a plain state dict or a .safetensors file"
            ) from exc
    return _unwrap_state_dict(obj, p)


def _list(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_strict(vit: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Convert ``state_dict`` with timm's ViT filter, then load it with every key checked.

    The filter handles the original layouts that timm converts (JAX-ported ``jx_vit_*.pth``,
    DeiT ``{"model": ...}``, linear patch embeddings, positional embeddings of another grid,
    OpenAI/OpenCLIP layouts). Raises :class:`WeightLoadError` listing missing, unexpected and
    shape-mismatched keys.
    """
    from timm.models.vision_transformer import checkpoint_filter_fn

    try:
        converted = checkpoint_filter_fn(dict(state_dict), vit)
    except Exception as exc:  # a layout timm cannot convert
        raise WeightLoadError(f"{source}: timm could not convert these weights for this ViT ({exc})") from exc
    converted = {k: v for k, v in converted.items() if not k.startswith(_IGNORED_PREFIXES)}
    expected = vit.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    mismatched = sorted(
        f"{k} (file {tuple(converted[k].shape)}, model {tuple(expected[k].shape)})"
        for k in set(expected) & set(converted)
        if tuple(converted[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_list(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_list(mismatched)}")
    if problems:
        raise WeightLoadError(
            f"{source} does not match the backbone ({type(vit).__name__}, {len(expected)} tensors): "
            + "; ".join(problems)
            + ". Check model.backbone and model.backbone_kwargs against the weights."
        )
    vit.load_state_dict(converted, strict=True)


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a local weight file into a timm ViT (or a :class:`ViTBackbone`), strictly."""
    vit = module.vit if isinstance(module, ViTBackbone) else module
    load_state_dict_strict(vit, read_state_dict(path), str(path))


def _looks_like_file(spec: str) -> bool:
    return spec.endswith(WEIGHT_SUFFIXES) or Path(spec).expanduser().exists()


class ViTBackbone(nn.Module):
    """timm ViT returning ``(cls, F, F_aux)`` for any input with sides divisible by the patch size."""

    def __init__(
        self,
        name: str,
        pretrained: str | None = None,
        aux_layer: int = -3,
        freeze_pos_embed: bool = True,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        self.vit = _timm_vit(name, **timm_kwargs)
        depth = len(self.vit.blocks)
        if not -depth <= aux_layer < depth:
            raise ValueError(f"model.aux_layer = {aux_layer} is outside the {depth} blocks of {name!r}")
        self.aux_index = aux_layer % depth
        patch = self.vit.patch_embed.patch_size
        if patch[0] != patch[1]:
            raise ValueError(f"backbone {name!r} has a non-square patch {patch}; SeCo needs square patches")
        self.patch_size: int = int(patch[0])
        self.embed_dim: int = int(self.vit.embed_dim)
        self.num_prefix_tokens: int = int(self.vit.num_prefix_tokens)
        self.grid_size: tuple[int, int] = tuple(int(g) for g in self.vit.patch_embed.grid_size)  # type: ignore[assignment]
        if pretrained:
            self.load_pretrained(name, pretrained, **timm_kwargs)
        # The reference keeps the positional embedding fixed (requires_grad=False).
        self.vit.pos_embed.requires_grad_(not freeze_pos_embed)

    def load_pretrained(self, name: str, pretrained: str, **timm_kwargs: Any) -> None:
        """Load a local file (strict) or timm hub weights named ``pretrained``."""
        spec = str(pretrained)
        if is_builtin(spec):
            try:
                path = builtin_weights(spec)
            except (ValueError, FileNotFoundError) as exc:
                raise WeightLoadError(str(exc)) from exc
            load_weights(self.vit, path)
            return
        if _looks_like_file(spec):
            load_weights(self.vit, Path(spec).expanduser())
            return
        import timm

        kwargs = dict(timm_kwargs)
        kwargs["num_classes"] = 0
        kwargs.setdefault("global_pool", "")
        try:
            hub_model = timm.create_model(spec, pretrained=True, **kwargs)
        except Exception as exc:  # network errors, unknown tags
            raise WeightLoadError(
                f"could not fetch timm weights {spec!r} ({exc}); give a local .pth/.safetensors file instead"
            ) from exc
        load_state_dict_strict(self.vit, hub_model.state_dict(), f"timm weights {spec!r}")

    def resized_pos_embed(self, h: int, w: int) -> torch.Tensor:
        """Positional embedding for an (h, w) token grid: (1, prefix + h*w, D) or (1, h*w, D)."""
        pos = self.vit.pos_embed
        n_pos_prefix = 0 if self.vit.no_embed_class else self.num_prefix_tokens
        gh, gw = self.grid_size
        grid = pos[:, n_pos_prefix:].reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False, antialias=False)
        grid = grid.flatten(2).transpose(1, 2)
        if n_pos_prefix:
            return torch.cat([pos[:, :n_pos_prefix], grid], dim=1)
        return grid

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """Run the encoder; return (normed tokens (N, T, D), aux tokens (N, T, D), h, w)."""
        vit = self.vit
        x = vit.patch_embed.proj(x)
        h, w = x.shape[-2], x.shape[-1]
        x = vit.patch_embed.norm(x.flatten(2).transpose(1, 2))
        pos = self.resized_pos_embed(h, w).to(x.dtype)
        prefix = [vit.cls_token.expand(x.shape[0], -1, -1)]
        if vit.reg_token is not None:
            prefix.append(vit.reg_token.expand(x.shape[0], -1, -1))
        if vit.no_embed_class:
            x = torch.cat(prefix + [x + pos], dim=1)
        else:
            x = torch.cat(prefix + [x], dim=1) + pos
        x = vit.pos_drop(x)
        x = vit.norm_pre(x)
        aux = x
        last = len(vit.blocks) - 1
        for i, block in enumerate(vit.blocks):
            x = block(x)
            if i == self.aux_index and i != last:
                aux = x
        x = vit.norm(x)
        if self.aux_index == last:
            aux = x
        return x, aux, h, w

    def to_map(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Patch tokens (N, prefix + h*w, D) -> feature map (N, D, h, w)."""
        return tokens[:, self.num_prefix_tokens:].transpose(1, 2).reshape(tokens.shape[0], -1, h, w)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens, aux, h, w = self.tokens(x)
        return tokens[:, 0], self.to_map(tokens, h, w), self.to_map(aux, h, w)

    def forward_cls(self, x: torch.Tensor) -> torch.Tensor:
        """Class token only (N, D): what the contrastive branch needs."""
        return self.tokens(x)[0][:, 0]
