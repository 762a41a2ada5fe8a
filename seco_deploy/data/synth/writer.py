"""Writing a synthetic set: :func:`synthesize` renders the scenes and writes the files.

``synthesize(out_dir, images, size, seed, val_fraction, difficulty, overwrite, preview)``
writes the layout of :mod:`.layout` and returns a :class:`.summary.SynthSummary`.

- Determinism: image ``i`` is rendered (:func:`.scenes.render_scene`) from its own generator,
  seeded by ``SeedSequence([seed & 0xFFFFFFFF, i])``, so the same seed gives the same bytes and
  image ``i`` does not depend on how many images are made. The validation images are the first
  ``round(images * val_fraction)`` of a permutation seeded by ``(seed, 2**31 - 1)``; with
  ``val_fraction > 0`` and at least two images, each split holds at least one image.
- Files: JPEG quality 92 (OpenCV's encoder), masks and context masks as 8-bit palette PNGs,
  tags = the classes present in each mask, ``synth.json`` = the arguments, the profile, the
  classes, contexts and couplings, and the statistics of :mod:`.summary`.
- Atomicity: the set is written to a temporary folder beside ``out_dir`` and renamed into place
  at the end; on any error the temporary folder is removed and ``out_dir`` is left as it was.
  ``out_dir`` must be missing or empty; ``overwrite`` replaces an earlier synthetic set (a folder
  holding ``synth.json``) and nothing else.
- ``preview``: a contact sheet of the first 16 scenes (:mod:`.preview`), written after the set.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from seco_deploy.data.io import encode_mask_png
from seco_deploy.data.synth.layout import (
    CLASSES_FILE,
    CONTEXT_MASKS_DIR,
    IMAGES_DIR,
    INFO_FILE,
    LISTS_DIR,
    MASKS_DIR,
    SYNTH_VERSION,
    TAGS_FILE,
)
from seco_deploy.data.synth.preview import write_contact_sheet
from seco_deploy.data.synth.profiles import CLASSES, CONTEXT_OF, CONTEXTS, PAIRS, PROFILES, SynthProfile
from seco_deploy.data.synth.scenes import Scene, render_scene
from seco_deploy.data.synth.summary import SynthSummary, summarise


def _encode_jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG image")
    return buf.tobytes()


def _prepare_out(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise FileExistsError(f"{out_dir} exists and is not a folder")
        if any(out_dir.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{out_dir} is not empty; choose a new folder (or overwrite a synthetic set)")
            if not (out_dir / INFO_FILE).is_file():
                raise FileExistsError(
                    f"{out_dir} is not empty and is not a synthetic set (no {INFO_FILE}); refusing to replace it"
                )


def synthesize(
    out_dir: str | os.PathLike[str],
    images: int = 1000,
    size: int = 224,
    seed: int = 0,
    val_fraction: float = 0.2,
    difficulty: str = "hard",
    overwrite: bool = False,
    preview: str | os.PathLike[str] | None = None,
) -> SynthSummary:
    """Write a synthetic co-occurrence dataset to ``out_dir`` (see the module docstring).

    ``difficulty`` names a profile in :data:`PROFILES`. Raises ``ValueError`` for bad
    arguments and ``FileExistsError`` when ``out_dir`` holds other files (``overwrite``
    replaces an earlier synthetic set only).
    """
    if difficulty not in PROFILES:
        raise ValueError(f"unknown difficulty {difficulty!r}; choose one of {', '.join(PROFILES)}")
    if images < 1:
        raise ValueError(f"--images must be at least 1, got {images}")
    if size < 32:
        raise ValueError(f"--size must be at least 32 pixels, got {size}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"--val-fraction must lie in [0, 1), got {val_fraction}")
    profile = PROFILES[difficulty]
    out = Path(out_dir)
    _prepare_out(out, overwrite)
    start = time.perf_counter()

    n_val = int(round(images * val_fraction))
    if val_fraction > 0 and images >= 2:
        n_val = min(max(n_val, 1), images - 1)
    order = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, 2**31 - 1])).permutation(images)
    is_val = np.zeros(images, dtype=bool)
    is_val[order[:n_val]] = True
    digits = max(5, len(str(images - 1)))
    names = [f"synth_{i:0{digits}d}" for i in range(images)]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(4)}"
    tags_all = np.zeros((images, len(CLASSES) - 1), dtype=bool)
    ctx_area = np.zeros((images, len(CONTEXTS)), dtype=np.float64)
    area = np.zeros((images, len(CLASSES)), dtype=np.float64)
    sheet: list[Scene] = []
    try:
        for sub in (IMAGES_DIR, MASKS_DIR, CONTEXT_MASKS_DIR, LISTS_DIR):
            (tmp / sub).mkdir(parents=True)
        for i, name in enumerate(names):
            rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, i]))
            scene = render_scene(rng, size, profile)
            (tmp / IMAGES_DIR / f"{name}.jpg").write_bytes(_encode_jpeg(scene.image))
            (tmp / MASKS_DIR / f"{name}.png").write_bytes(encode_mask_png(scene.mask))
            (tmp / CONTEXT_MASKS_DIR / f"{name}.png").write_bytes(encode_mask_png(scene.context))
            counts = np.bincount(scene.mask.ravel(), minlength=len(CLASSES))
            tags_all[i] = counts[1 : len(CLASSES)] > 0
            area[i] = counts[: len(CLASSES)] / scene.mask.size
            ctx_area[i] = np.bincount(scene.context.ravel(), minlength=len(CONTEXTS))[: len(CONTEXTS)] / scene.mask.size
            if preview is not None and len(sheet) < 16:
                sheet.append(scene)
        _write_lists(tmp, names, is_val, tags_all)
        summary = summarise(out, is_val, tags_all, ctx_area, area, profile)
        meta = _metadata(images, size, seed, val_fraction, profile, summary)
        (tmp / INFO_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            trash = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
            os.replace(out, trash)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if preview is not None:
        write_contact_sheet(preview, sheet)
    summary.seconds = time.perf_counter() - start
    return summary


def _write_lists(tmp: Path, names: list[str], is_val: np.ndarray, tags: np.ndarray) -> None:
    train = [n for n, v in zip(names, is_val, strict=True) if not v]
    val = [n for n, v in zip(names, is_val, strict=True) if v]
    lists = tmp / LISTS_DIR
    (lists / "train.txt").write_text("".join(f"{n}\n" for n in train), encoding="utf-8")
    (lists / "val.txt").write_text("".join(f"{n}\n" for n in val), encoding="utf-8")
    (lists / "trainval.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    rows = ["image,tags,split"]
    for name, row, v in zip(names, tags, is_val, strict=True):
        present = ";".join(CLASSES[c + 1] for c in np.flatnonzero(row))
        rows.append(f"{IMAGES_DIR}/{name}.jpg,{present},{'val' if v else 'train'}")
    (tmp / TAGS_FILE).write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp / CLASSES_FILE).write_text("".join(f"{c}\n" for c in CLASSES), encoding="utf-8")


def _metadata(images: int, size: int, seed: int, val_fraction: float, p: SynthProfile, s: SynthSummary) -> dict:
    return {
        "generator": "seco_deploy.data.synth",
        "version": SYNTH_VERSION,
        "images": images,
        "size": size,
        "seed": seed,
        "val_fraction": val_fraction,
        "difficulty": p.name,
        "profile": asdict(p),
        "classes": list(CLASSES),
        "contexts": list(CONTEXTS),
        "context_masks": CONTEXT_MASKS_DIR,
        "context_of": dict(CONTEXT_OF),
        "context_index": {name: i for i, name in enumerate(CONTEXTS) if i},
        "pairs": [list(pair) for pair in PAIRS],
        "stats": {
            "train": s.train,
            "val": s.val,
            "images_per_class": s.images_per_class,
            "context_given_class": s.context_given_class,
            "context_alone": s.context_alone,
            "pair_rate": s.pair_rate,
            "mean_area": s.mean_area,
            "context_area": s.context_area,
            **s.extra,
        },
    }
