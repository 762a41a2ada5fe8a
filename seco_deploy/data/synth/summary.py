"""The statistics of a synthetic set: what :func:`seco_deploy.data.synth.synthesize` reports.

:func:`summarise` is a pure function of per-image arrays over the N images of a set:
``is_val`` bool ``(N,)``; ``tags`` bool ``(N, C)``, column ``c - 1`` true when class ``c`` of
:data:`.profiles.CLASSES` is visible in the mask; ``area`` float ``(N, len(CLASSES))`` and
``ctx_area`` float ``(N, len(CONTEXTS))``, the fraction of the image each class and each context
covers. A context counts as visible in an image when its area is above 0. Rates and areas are
rounded to 4 decimals:

- ``context_given_class["water|boat"]`` = P(water visible | boat visible), likewise for every
  (class, context) of :data:`.profiles.CONTEXT_OF`;
- ``context_alone["water"]`` = the fraction of all images showing water without a boat;
- ``pair_rate["person|horse"]`` = P(person | horse) and ``pair_rate["horse|person"]`` the
  reverse, for every pair of :data:`.profiles.PAIRS`;
- ``mean_area`` / ``context_area``: the mean area of a class / context over the images that
  show it;
- ``extra["background_only"]``: the fraction of images without any foreground class.

A conditional rate whose condition never occurs, or a mean over no image, is 0.0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from seco_deploy.data.synth.profiles import CLASSES, CONTEXT_INDEX, CONTEXT_OF, CONTEXTS, PAIRS, SynthProfile


@dataclass
class SynthSummary:
    """What ``synthesize`` wrote, with the figures the CLI prints."""

    out_dir: Path
    images: int
    train: int
    val: int
    profile: str
    images_per_class: dict[str, int]
    context_given_class: dict[str, float]  # P(context visible | class visible)
    context_alone: dict[str, float]  # fraction of images with the context but not its class
    pair_rate: dict[str, float]  # "person|horse": P(person visible | horse visible), and the reverse
    mean_area: dict[str, float]  # mean fraction of the image covered, over images holding it
    context_area: dict[str, float] = field(default_factory=dict)  # same, for each context
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The fields as plain data (``out_dir`` as a string)."""
        out = asdict(self)
        out["out_dir"] = str(self.out_dir)
        return out


def _rate(numerator: np.ndarray, denominator: np.ndarray) -> float:
    d = int(denominator.sum())
    return round(float((numerator & denominator).sum()) / d, 4) if d else 0.0


def summarise(
    out: Path,
    is_val: np.ndarray,
    tags: np.ndarray,
    ctx_area: np.ndarray,
    area: np.ndarray,
    profile: SynthProfile,
) -> SynthSummary:
    """The figures of :class:`SynthSummary` (see the module docstring for the inputs)."""
    n = len(is_val)
    ctx = ctx_area > 0
    col = {name: tags[:, i - 1] for i, name in enumerate(CLASSES) if i}
    per_class = {name: int(col[name].sum()) for name in CLASSES[1:]}
    given, alone = {}, {}
    for cls, context in CONTEXT_OF.items():
        has_ctx = ctx[:, CONTEXT_INDEX[context]]
        given[f"{context}|{cls}"] = _rate(has_ctx, col[cls])
        alone[context] = round(float((has_ctx & ~col[cls]).sum()) / n, 4)
    pairs = {}
    for a, b in PAIRS:
        pairs[f"{b}|{a}"] = _rate(col[b], col[a])
        pairs[f"{a}|{b}"] = _rate(col[a], col[b])
    mean_area = {}
    for i, name in enumerate(CLASSES[1:], start=1):
        held = col[name]
        mean_area[name] = round(float(area[held, i].mean()), 4) if held.any() else 0.0
    context_area = {}
    for k, name in enumerate(CONTEXTS[1:], start=1):
        held = ctx[:, k]
        context_area[name] = round(float(ctx_area[held, k].mean()), 4) if held.any() else 0.0
    return SynthSummary(
        out_dir=out,
        images=n,
        train=int((~is_val).sum()),
        val=int(is_val.sum()),
        profile=profile.name,
        images_per_class=per_class,
        context_given_class=given,
        context_alone=alone,
        pair_rate=pairs,
        mean_area=mean_area,
        context_area=context_area,
        extra={"background_only": round(float((~tags.any(axis=1)).mean()), 4)},
    )
