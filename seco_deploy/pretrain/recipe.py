"""The pretraining recipe: every setting of a ``seco pretrain`` run, typed and checked.

A run is a pure function of its recipe: image ``i`` of iteration ``t`` is scene
``t * batch + i`` of the stream ``seed`` (``source``: ``fractals``, fractal objects on unlabelled
noise, :mod:`.fractals`; ``regions``, fractal objects on textured regions that are categories of
their own, :mod:`.regions`; ``shapes``, objects made of solid parts on unlabelled textured
surfaces, :mod:`.shapes`), so resuming at iteration t sees
exactly the images an uninterrupted run would. The recipe is stored in the run's checkpoint and
in the weights file's metadata; resuming with a different recipe is refused.

Loss (``supervision``):

- ``image``: multi-label classification of the class token, ``BCE(W_cls cls, y)`` (the
  ImageNet-style image-level supervision);
- ``dense``: that plus ``patch_weight * (CE_bg + CE_fg) / 2`` over the patch tokens, where
  ``CE_bg`` and ``CE_fg`` are the mean cross-entropy of ``W_patch F`` against ``patch_labels`` over
  background and over foreground patches (balanced: background is most of every scene, and a
  plain mean is minimised by calling every patch background). It also teaches where each
  category is.

Initialisation (``init``): ``timm``, timm's own; ``mimetic``, attention set up as a trained ViT's
and a 2-D sine-cosine positional table (:mod:`seco_deploy.model.init`), which starts learning
sooner from scratch.

Learning rate: linear warm-up over ``warmup_iters`` from 0, then cosine to ``lr * min_lr_ratio``
at ``iters``; AdamW with ``weight_decay`` on matrices only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SUPERVISION = ("image", "dense")
SOURCES = ("fractals", "regions", "shapes")
INITS = ("timm", "mimetic")


class RecipeError(ValueError):
    """A recipe setting is out of range or unknown; the message names it."""


@dataclass(frozen=True)
class PretrainRecipe:
    backbone: str = "vit_tiny_patch16_224"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    source: str = "fractals"
    categories: int = 8
    max_objects: int = 3
    textures: int = 8
    max_regions: int = 3
    image_size: int = 112
    supervision: str = "dense"
    init: str = "timm"
    patch_weight: float = 1.0
    iters: int = 2000
    batch_size: int = 32
    lr: float = 3e-4
    min_lr_ratio: float = 0.01
    weight_decay: float = 0.05
    warmup_iters: int = 100
    seed: int = 0
    eval_images: int = 256
    log_every: int = 20
    eval_every: int = 250
    save_every: int = 50

    def __post_init__(self) -> None:
        positive = ("categories", "max_objects", "image_size", "iters", "batch_size", "log_every", "eval_every",
                    "save_every", "eval_images")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise RecipeError(f"pretrain {name} must be >= 1, got {getattr(self, name)}")
        if self.supervision not in SUPERVISION:
            raise RecipeError(f"pretrain supervision must be one of {', '.join(SUPERVISION)}, got {self.supervision!r}")
        if self.init not in INITS:
            raise RecipeError(f"pretrain init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.source not in SOURCES:
            raise RecipeError(f"pretrain source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.textures < 1 or self.max_regions < 1:
            raise RecipeError("pretrain textures and max_regions must be >= 1")
        if self.categories < self.max_objects:
            raise RecipeError(f"pretrain categories ({self.categories}) must be >= max_objects ({self.max_objects})")
        if not self.lr > 0 or not 0 <= self.min_lr_ratio <= 1 or self.weight_decay < 0 or self.patch_weight < 0:
            raise RecipeError("pretrain lr must be > 0, min_lr_ratio in [0, 1], weight_decay and patch_weight >= 0")
        if self.warmup_iters < 0 or self.warmup_iters >= self.iters:
            raise RecipeError(f"pretrain warmup_iters must be in [0, iters={self.iters}), got {self.warmup_iters}; "
                              "lower it with --set warmup_iters=N")

    @property
    def classes(self) -> int:
        """Length of the label vector: the object categories, then (``regions``) the texture categories."""
        return self.categories + (self.textures if self.source == "regions" else 0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PretrainRecipe:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise RecipeError(f"unknown pretrain setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)

    def with_overrides(self, pairs: list[str]) -> PretrainRecipe:
        """``["iters=200", "supervision=image"]`` applied with each field's type."""
        values = self.to_dict()
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            key = key.strip()
            if not sep or key not in values:
                raise RecipeError(f"--set {pair!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(values))}")
            current = values[key]
            try:
                if isinstance(current, bool):
                    value: Any = raw.strip().lower() in ("1", "true", "yes", "on")
                elif isinstance(current, int):
                    value = int(raw)
                elif isinstance(current, float):
                    value = float(raw)
                elif isinstance(current, dict):
                    import json

                    value = json.loads(raw)
                else:
                    value = raw.strip()
            except ValueError as exc:
                raise RecipeError(f"--set {pair!r}: {key} takes a {type(current).__name__} ({exc})") from exc
            values[key] = value
        return PretrainRecipe.from_dict(values)

    def learning_rate(self, iteration: int) -> float:
        """Warm-up then cosine (module doc), for 0-based ``iteration``."""
        import math

        if iteration < self.warmup_iters:
            return self.lr * (iteration + 1) / self.warmup_iters
        progress = (iteration - self.warmup_iters) / max(1, self.iters - self.warmup_iters)
        floor = self.lr * self.min_lr_ratio
        return floor + (self.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
