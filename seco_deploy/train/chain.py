"""The chain, measured: where SeCo's signal holds and where it breaks, from the training views' masks.

SeCo turns CAM seeds into an ROI mask, the ROI into crop tags, the tags into contrast (method
§2.2-§2.10). On a training set with masks (a validation-free measure: the masks are cut with the
views, :class:`seco_deploy.data.transforms.TrainViews`, and never reach a loss), each iteration's
decisions are held against the truth. :func:`chain_counts` returns integer counts that sum over
iterations and ranks; :func:`chain_figures` turns a sum of them into the logged figures:

- ``seeds`` per class c: precision and recall of the training CAMs' pseudo label
  (:func:`seco_deploy.cam.cam_to_label` with ``bkg_thre``, the image's tags), and, for a class
  with a context (boat: water), ``context_fa``: the share of the context's background pixels, in
  images tagged c, labelled c (the co-occurrence trap, on the training CAMs);
- ``roi`` per class: precision of the ROI mask's confident pixels of c; ``uncertain_fg``: the
  share of uncertain pixels that are foreground;
- ``tags`` per tag t (0 = background): of the crops tagged t, the share that hold t (t > 0: at
  least :data:`MIN_CLASS_FRACTION` of the crop is class t; t = 0: less than that of any class),
  that hold only t's context, another class, or nothing (for t > 0);
- ``rectification``: anchors (local crops) whose tag rectification removed, split by whether the
  tag was wrong (the crop does not hold the class: a good removal) or right.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from seco_deploy import cam as camlib

__all__ = ["MIN_CLASS_FRACTION", "ChainSpec", "chain_counts", "chain_figures"]

MIN_CLASS_FRACTION = 0.05  # a crop holds a class when at least this share of its pixels is that class
IGNORE = 255


@dataclass(frozen=True)
class ChainSpec:
    """``classes`` background first; ``context_of`` class index -> context index of the context masks
    (e.g. boat -> water); ``bkg_thre`` of the CAM pseudo label; ``crop_size`` of the local crops."""

    classes: tuple[str, ...]
    crop_size: int
    bkg_thre: float = 0.5
    context_of: dict[int, int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes) - 1


def _per_class_hits(label: torch.Tensor, gt: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C+1, 3) counts [tp, pred, gt] of classes 0..C over pixels whose gt is not ignored."""
    ok = gt != IGNORE
    k = num_classes + 1
    p = torch.where(ok, label.long().clamp(0, k - 1), 0)
    g = torch.where(ok, gt.long(), 0)
    w = ok.long()
    tp = torch.zeros(k, dtype=torch.long, device=gt.device).index_add_(0, g.flatten(), (w * (p == g)).flatten())
    pred = torch.zeros(k, dtype=torch.long, device=gt.device).index_add_(0, p.flatten(), w.flatten())
    truth = torch.zeros(k, dtype=torch.long, device=gt.device).index_add_(0, g.flatten(), w.flatten())
    return torch.stack([tp, pred, truth], dim=1)


@torch.no_grad()
def chain_counts(spec: ChainSpec, batch: dict[str, Any], probe: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Integer counts of one iteration (see the module docstring); empty when the batch has no masks."""
    if "mask" not in batch or "cam" not in probe:
        return {}
    gt = batch["mask"].to(probe["cam"].device).long()
    if bool((gt == IGNORE).all()):
        return {}
    c = spec.num_classes
    labels = batch["tags"].to(gt.device, torch.float32)
    context = batch.get("context")
    context = context.to(gt.device).long() if context is not None else torch.zeros_like(gt)
    cam = probe["cam"]
    seed = camlib.cam_to_label(cam, labels, spec.bkg_thre)
    out = {"seeds": _per_class_hits(seed, gt, c)}
    fa = torch.zeros(c + 1, 2, dtype=torch.long, device=gt.device)  # [context pixels, labelled as the class]
    for cls, ctx in spec.context_of.items():
        tagged = labels[:, cls - 1] > 0.5
        where = (context == ctx) & (gt == 0) & tagged[:, None, None]
        fa[cls, 0] = where.sum()
        fa[cls, 1] = (where & (seed == cls)).sum()
    out["context_fa"] = fa
    if "roi" in probe:
        roi = probe["roi"].long()
        confident = torch.where((roi >= 1) & (roi <= c), roi, 0)
        hits = _per_class_hits(confident, gt, c)
        uncertain = (roi == camlib.UNCERTAIN) & (gt != IGNORE)
        out["roi"] = hits[:, :2]  # [tp, predicted] per class; class 0 is unused
        out["uncertain"] = torch.stack([uncertain.sum(), (uncertain & (gt >= 1)).sum()])
    if "crop_tags" in probe:
        out.update(_crop_counts(spec, gt, context, probe))
    return out


def _crop_counts(spec: ChainSpec, gt: torch.Tensor, context: torch.Tensor,
                 probe: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    c, s = spec.num_classes, spec.crop_size
    y0, x0, tags = probe["crop_y0"], probe["crop_x0"], probe["crop_tags"].long()
    gt_crops = camlib.extract_crops(gt, y0, x0, s).flatten(2)  # (B, n, s*s)
    ctx_crops = camlib.extract_crops(context, y0, x0, s).flatten(2)
    area = s * s
    share = torch.stack([(gt_crops == k).sum(-1) for k in range(1, c + 1)], dim=-1).float() / area  # (B, n, C)
    holds = share >= MIN_CLASS_FRACTION
    any_fg = holds.any(-1)
    t = tags.clamp(min=0)
    holds_tag = torch.where(t > 0, holds.gather(-1, (t.clamp(min=1) - 1)[..., None]).squeeze(-1), ~any_fg)
    ctx_of = torch.zeros(c + 1, dtype=torch.long, device=gt.device)
    for cls, ctx in spec.context_of.items():
        ctx_of[cls] = ctx
    tag_ctx = ctx_of[t]
    ctx_share = (ctx_crops == tag_ctx[..., None]).sum(-1).float() / area
    holds_ctx = (tag_ctx > 0) & (ctx_share >= MIN_CLASS_FRACTION)
    other = any_fg & ~holds_tag
    # per tag: [tagged, right, context only, another class, nothing]
    table = torch.zeros(c + 1, 5, dtype=torch.long, device=gt.device)
    valid = tags >= 0
    cols = [valid, valid & holds_tag, valid & (t > 0) & ~holds_tag & ~other & holds_ctx, valid & (t > 0) & other,
            valid & (t > 0) & ~holds_tag & ~other & ~holds_ctx]
    for j, col in enumerate(cols):
        table[:, j] = table[:, j].index_add(0, t.flatten(), col.long().flatten())
    out = {"tags": table, "ambiguous": (tags == -1).sum().view(1)}
    if "anchor_tags" in probe:
        after = probe["anchor_tags"][:, 2:].long()  # the crops' anchors; the two views come first
        removed = (tags > 0) & (after == -1)
        out["rectified"] = torch.stack([(removed & ~holds_tag).sum(), (removed & holds_tag).sum()])
    return out


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 4) if den > 0 else None


def chain_figures(spec: ChainSpec, sums: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The logged figures of summed :func:`chain_counts` (None where a ratio has no denominator)."""
    names = spec.classes
    out: dict[str, Any] = {}
    if "seeds" in sums:
        s = sums["seeds"].tolist()
        out["seeds"] = {names[k]: {"precision": _ratio(s[k][0], s[k][1]), "recall": _ratio(s[k][0], s[k][2])}
                        for k in range(1, len(names))}
    if "context_fa" in sums and spec.context_of:
        fa = sums["context_fa"].tolist()
        for cls in spec.context_of:
            out["seeds"][names[cls]]["context_fa"] = _ratio(fa[cls][1], fa[cls][0])
    if "roi" in sums:
        r = sums["roi"].tolist()
        out["roi"] = {names[k]: {"precision": _ratio(r[k][0], r[k][1])} for k in range(1, len(names))}
        u = sums["uncertain"].tolist()
        out["roi"]["uncertain_fg"] = _ratio(u[1], u[0])
    if "tags" in sums:
        t = sums["tags"].tolist()
        tags = {}
        for k in range(len(names)):
            n = t[k][0]
            row = {"crops": n, "right": _ratio(t[k][1], n)}
            if k > 0:
                row.update(context=_ratio(t[k][2], n), other=_ratio(t[k][3], n), nothing=_ratio(t[k][4], n))
            tags[names[k]] = row
        fg = [t[k] for k in range(1, len(names))]
        tagged = sum(r[0] for r in fg)
        tags["all foreground"] = {"crops": tagged, "right": _ratio(sum(r[1] for r in fg), tagged),
                                  "context": _ratio(sum(r[2] for r in fg), tagged),
                                  "other": _ratio(sum(r[3] for r in fg), tagged),
                                  "nothing": _ratio(sum(r[4] for r in fg), tagged)}
        tags["ambiguous"] = int(sums["ambiguous"].sum())
        out["tags"] = tags
    if "rectified" in sums:
        wrong, right = (int(v) for v in sums["rectified"].tolist())
        out["rectification"] = {"removed_wrong": wrong, "removed_right": right}
    return out
