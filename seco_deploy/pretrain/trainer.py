"""``seco pretrain``: supervised pretraining of the SeCo encoder on rendered scenes (:mod:`.fractals`, :mod:`.regions`).

Files in ``OUT``:

- ``last.pt``: the resumable state (recipe, iteration, network, optimiser), written atomically
  every ``save_every`` iterations, at the time limit and on Ctrl-C;
- ``metrics.jsonl``: one record per log step (``loss``, ``lr``, ``it_s``) and per evaluation
  (``eval_f1``: multi-label F1 of the class-token head at 0.5; ``eval_patch_acc``: accuracy of
  the patch head over patches, background included; ``eval_fg_acc``: over foreground patches);
- ``weights.safetensors``: the encoder alone (timm ``VisionTransformer`` keys, fp16), the file
  ``seco train --pretrained`` loads; its metadata holds the recipe, the iterations done and the
  last evaluation, and ``card.json`` beside it says what the encoder has seen.

The network is the encoder of :class:`~seco_deploy.model.backbone.ViTBackbone` (positional
embedding trained) with two linear heads: ``W_cls`` on the class token (K = ``recipe.classes`` logits) and
``W_patch`` on the final patch tokens (K + 1 logits, background first).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seco_deploy.config import DataConfig
from seco_deploy.data.io import atomic_path, atomic_write_text, file_sha256
from seco_deploy.data.workers import worker_init_fn
from seco_deploy.model.backbone import ViTBackbone
from seco_deploy.model.init import locality_init_
from seco_deploy.pretrain.fractals import Scene, category_bank, render_scene
from seco_deploy.pretrain.recipe import PretrainRecipe, RecipeError
from seco_deploy.pretrain.regions import render_region_scene, texture_bank
from seco_deploy.pretrain.shapes import render_shape_scene, shape_bank

EVAL_STREAM = 1_000_003  # eval scenes come from stream seed + EVAL_STREAM: never a training image
STATE_FILE = "last.pt"
WEIGHTS_FILE = "weights.safetensors"


class PretrainNet(nn.Module):
    def __init__(self, recipe: PretrainRecipe) -> None:
        super().__init__()
        self.encoder = ViTBackbone(recipe.backbone, aux_layer=-1, freeze_pos_embed=False, **recipe.backbone_kwargs)
        if recipe.init == "mimetic":
            locality_init_(self.encoder.vit)
        dim = self.encoder.embed_dim
        self.cls_head = nn.Linear(dim, recipe.classes)
        self.patch_head = nn.Conv2d(dim, recipe.classes + 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls, feats, _ = self.encoder(x)
        return self.cls_head(cls), self.patch_head(feats)


class SceneStream(torch.utils.data.Dataset):
    """Scene ``index`` of stream ``seed`` as ``(image (3, S, S) normalised, labels (K,), patch labels)``."""

    def __init__(self, recipe: PretrainRecipe, seed: int, patch: int) -> None:
        self.recipe, self.seed, self.patch = recipe, seed, patch
        self.bank: list[Any] = (shape_bank(recipe.seed, recipe.categories) if recipe.source == "shapes"
                                else category_bank(recipe.seed, recipe.categories))
        self.textures = texture_bank(recipe.seed, recipe.textures) if recipe.source == "regions" else []
        data = DataConfig()
        self.mean = np.asarray(data.mean, np.float32) * 255
        self.std = np.asarray(data.std, np.float32) * 255

    def __len__(self) -> int:
        return 2**62

    def scene(self, index: int) -> Scene:
        r = self.recipe
        if r.source == "shapes":
            return render_shape_scene(self.bank, self.seed, index, r.image_size, self.patch, r.max_objects)
        if r.source == "regions":
            return render_region_scene(self.bank, self.textures, self.seed, index, r.image_size, self.patch,
                                       r.max_objects, r.max_regions)
        return render_scene(self.bank, self.seed, index, r.image_size, self.patch, r.max_objects)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scene = self.scene(index)
        image = (scene.image.astype(np.float32) - self.mean) / self.std
        return (torch.from_numpy(image.transpose(2, 0, 1).copy()), torch.from_numpy(scene.labels),
                torch.from_numpy(scene.patch_labels))


class _Range(torch.utils.data.Sampler):
    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def losses(recipe: PretrainRecipe, cls_logits: torch.Tensor, patch_logits: torch.Tensor, labels: torch.Tensor,
           patch_labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """``cls``: BCE of the class-token logits; ``patch``: the balanced patch CE of :mod:`.recipe` (0 for ``image``)."""
    out = {"cls": F.binary_cross_entropy_with_logits(cls_logits, labels)}
    if recipe.supervision == "dense":
        ce = F.cross_entropy(patch_logits, patch_labels, reduction="none")
        fg = (patch_labels > 0).to(ce.dtype)
        ce_fg = (ce * fg).sum() / fg.sum().clamp_min(1.0)
        ce_bg = (ce * (1 - fg)).sum() / (1 - fg).sum().clamp_min(1.0)
        out["patch"] = recipe.patch_weight * (ce_bg + ce_fg) / 2
    else:
        out["patch"] = cls_logits.new_zeros(())
    out["total"] = out["cls"] + out["patch"]
    return out


@dataclass
class PretrainOutcome:
    out: Path
    iteration: int
    finished: bool
    weights: Path
    evaluation: dict[str, float]


def _optimizer(net: nn.Module, recipe: PretrainRecipe) -> torch.optim.Optimizer:
    decay = [p for p in net.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in net.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=recipe.lr)


@torch.no_grad()
def evaluate(net: PretrainNet, recipe: PretrainRecipe, batch: int = 32) -> dict[str, float]:
    """F1 of the image labels and patch accuracies on ``eval_images`` held-out scenes."""
    net.eval()
    stream = SceneStream(recipe, recipe.seed + EVAL_STREAM, net.encoder.patch_size)
    tp = fp = fn = 0.0
    right = total = fg_right = fg_total = 0
    for start in range(0, recipe.eval_images, batch):
        items = [stream[i] for i in range(start, min(start + batch, recipe.eval_images))]
        x, y, p = (torch.stack(t) for t in zip(*items, strict=True))
        cls_logits, patch_logits = net(x)
        pred = (cls_logits > 0).float()
        tp += float((pred * y).sum())
        fp += float((pred * (1 - y)).sum())
        fn += float(((1 - pred) * y).sum())
        hit = patch_logits.argmax(1) == p
        right += int(hit.sum())
        total += hit.numel()
        fg_right += int(hit[p > 0].sum())
        fg_total += int((p > 0).sum())
    net.train()
    return {"eval_f1": 2 * tp / max(1.0, 2 * tp + fp + fn), "eval_patch_acc": right / max(1, total),
            "eval_fg_acc": fg_right / max(1, fg_total)}


def _save_state(path: Path, recipe: PretrainRecipe, iteration: int, net: nn.Module, opt: torch.optim.Optimizer) -> None:
    with atomic_path(path) as tmp:
        torch.save({"recipe": recipe.to_dict(), "iteration": iteration, "model": net.state_dict(),
                    "optimizer": opt.state_dict()}, tmp)


def write_weights(path: Path, net: PretrainNet, recipe: PretrainRecipe, iteration: int,
                  evaluation: dict[str, float]) -> Path:
    """The encoder's state dict in fp16 with the recipe in the safetensors metadata; ``card.json`` beside."""
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in net.encoder.vit.state_dict().items()}
    meta = {"seco_pretrain": json.dumps({"recipe": recipe.to_dict(), "iterations": iteration,
                                         "evaluation": evaluation}, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    card = {
        "weights": path.name,
        "sha256": file_sha256(path),
        "backbone": recipe.backbone,
        "recipe": recipe.to_dict(),
        "iterations": iteration,
        "images_seen": iteration * recipe.batch_size,
        "evaluation": evaluation,
        "has_seen": _has_seen(recipe, iteration),
    }
    atomic_write_text(path.with_name("card.json"), json.dumps(card, indent=2) + "\n")
    return path


def _has_seen(recipe: PretrainRecipe, iteration: int) -> str:
    never = ("no photograph, no dataset image, none of the synthetic co-occurrence set's classes, contexts or "
             "scenes")
    if recipe.source == "shapes":
        return (f"{iteration * recipe.batch_size} rendered scenes of 1-{recipe.max_objects} objects of "
                f"{recipe.categories} categories (seed {recipe.seed}), each a random rigid arrangement of 2-5 solid "
                "parts (ellipses, rectangles, triangles, polygons) in random colours, on 1-3 unlabelled bands of "
                "smooth noise, grain, stripes or blobs, with 0-3 unlabelled single-part clutter shapes, "
                f"{recipe.image_size} px; placed independently of each other and of the surfaces; {never}")
    surface = (f"1-{recipe.max_regions} regions, each one of {recipe.textures} texture categories (gratings, wavy "
               "lines, checkers, dot lattices, thresholded blobs) or smooth random-colour noise, placed independently "
               "of the objects" if recipe.source == "regions" else "smooth random-colour noise backgrounds")
    return (f"{iteration * recipe.batch_size} rendered scenes of 1-{recipe.max_objects} IFS fractals of "
            f"{recipe.categories} categories (seed {recipe.seed}) on {surface}, {recipe.image_size} px; {never}")


def pretrain(recipe: PretrainRecipe, out: Path, resume: bool = False, max_minutes: float | None = None,
             threads: int | None = None, say: Callable[[str], None] = print) -> PretrainOutcome:
    """Run (or resume) the recipe into ``out``; see the module doc for the files."""
    out = Path(out)
    state_path = out / STATE_FILE
    if state_path.exists() and not resume:
        raise FileExistsError(f"{out} already holds a pretraining run ({STATE_FILE}); pass --resume or a new folder")
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(recipe.seed)
    net = PretrainNet(recipe).train()
    opt = _optimizer(net, recipe)
    start = 0
    if resume and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        saved = {**PretrainRecipe().to_dict(), **state["recipe"]}  # settings added since: their defaults
        if saved != recipe.to_dict():
            changed = sorted(k for k in recipe.to_dict() if saved.get(k) != recipe.to_dict()[k])
            raise RecipeError(f"{state_path} was made with another recipe (differs in {', '.join(changed)}); "
                              "resume with the same settings or start a new folder")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["iteration"])
        say(f"resuming at iteration {start}/{recipe.iters}")
    stream = SceneStream(recipe, recipe.seed, net.encoder.patch_size)
    loader = torch.utils.data.DataLoader(stream, batch_size=recipe.batch_size,
                                         sampler=_Range(start * recipe.batch_size, recipe.iters * recipe.batch_size),
                                         num_workers=1, persistent_workers=False, prefetch_factor=4,
                                         multiprocessing_context="spawn", worker_init_fn=worker_init_fn)
    log = (out / "metrics.jsonl").open("a", encoding="utf-8")
    evaluation: dict[str, float] = {}
    deadline = time.monotonic() + 60 * max_minutes if max_minutes else None
    iteration = start
    t_log, n_log = time.perf_counter(), 0
    say(f"pretraining {recipe.backbone} on {recipe.source} scenes: {recipe.classes} categories, "
        f"{recipe.image_size} px, "
        f"batch {recipe.batch_size}, {recipe.supervision} supervision, iterations {start}..{recipe.iters}")
    try:
        for x, y, p in loader:
            lr = recipe.learning_rate(iteration)
            for group in opt.param_groups:
                group["lr"] = lr
            terms = losses(recipe, *net(x), y, p)
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            opt.step()
            iteration += 1
            n_log += 1
            if iteration % recipe.log_every == 0 or iteration == recipe.iters:
                rate = n_log / max(1e-9, time.perf_counter() - t_log)
                eta = (recipe.iters - iteration) / max(rate, 1e-9)
                record = {"iter": iteration, "lr": lr, "it_s": rate, **{k: float(v.detach()) for k, v in terms.items()}}
                log.write(json.dumps(record) + "\n")
                log.flush()
                say(f"iter {iteration}/{recipe.iters}  loss {record['total']:.4f} (cls {record['cls']:.4f}, "
                    f"patch {record['patch']:.4f})  lr {lr:.2e}  {rate:.2f} it/s  eta {eta / 60:.1f} min")
                t_log, n_log = time.perf_counter(), 0
            if iteration % recipe.eval_every == 0 or iteration == recipe.iters:
                evaluation = evaluate(net, recipe)
                log.write(json.dumps({"iter": iteration, **evaluation}) + "\n")
                log.flush()
                say(f"eval at {iteration}: " + ", ".join(f"{k} {v:.3f}" for k, v in evaluation.items()))
            if iteration % recipe.save_every == 0:
                _save_state(state_path, recipe, iteration, net, opt)
            if deadline is not None and time.monotonic() >= deadline and iteration < recipe.iters:
                say(f"time limit of {max_minutes:g} min reached at iteration {iteration}; --resume continues")
                break
    except KeyboardInterrupt:
        _save_state(state_path, recipe, iteration, net, opt)
        say(f"interrupted at iteration {iteration}; state saved, --resume continues")
        raise
    finally:
        log.close()
    _save_state(state_path, recipe, iteration, net, opt)
    if not evaluation:
        evaluation = evaluate(net, recipe)
    weights = write_weights(out / WEIGHTS_FILE, net, recipe, iteration, evaluation)
    say(f"weights: {weights} ({iteration}/{recipe.iters} iterations)")
    return PretrainOutcome(out, iteration, iteration >= recipe.iters, weights, evaluation)


def read_weights_metadata(path: str | Path) -> dict[str, Any]:
    """The ``seco_pretrain`` metadata of a weights file this module wrote ({} for another file)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta["seco_pretrain"]) if "seco_pretrain" in meta else {}
