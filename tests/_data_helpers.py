"""Tiny on-disk datasets for the data tests (VOC, COCO-style, folder + tags)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from seco_deploy.data.io import write_mask_png


def block_mask(h: int, w: int, classes: list[int], border: bool = True) -> np.ndarray:
    """A mask of vertical stripes, one per class in ``classes`` (0 allowed), 255 border if asked."""
    mask = np.zeros((h, w), dtype=np.uint8)
    edges = np.linspace(0, w, len(classes) + 1).astype(int)
    for c, (x0, x1) in zip(classes, zip(edges[:-1], edges[1:], strict=True), strict=True):
        mask[:, x0:x1] = c
    if border:
        mask[0, :] = 255
    return mask


def save_rgb(path: Path, image: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, **kwargs)
    return path


def noise_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_split(root: Path, split: str, names: list[str]) -> None:
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / f"{split}.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")


def write_voc_masks(root: Path, mask_dir: str = "SegmentationClass") -> dict[str, list[int]]:
    """Three VOC images with palette masks; returns name -> classes present (foreground)."""
    layout = {"2007_000001": [0, 15, 13], "2007_000002": [4], "2007_000003": [0, 19, 255]}
    for i, (name, classes) in enumerate(layout.items()):
        save_rgb(root / "JPEGImages" / f"{name}.jpg", noise_image(24, 32, i))
        write_mask_png(root / mask_dir / f"{name}.png", block_mask(24, 32, classes))
    write_split(root, "train", list(layout)[:2])
    write_split(root, "val", list(layout)[2:])
    return {n: sorted(c for c in cls if c not in (0, 255)) for n, cls in layout.items()}


def voc_xml(objects: list[str]) -> str:
    body = "".join(f"<object><name>{o}</name><difficult>0</difficult></object>" for o in objects)
    return f"<annotation><size><width>32</width><height>24</height></size>{body}</annotation>"


def write_voc_xml(root: Path) -> dict[str, list[str]]:
    """Two VOC images with XML annotations and no masks; returns name -> object names."""
    layout = {"2008_000010": ["dog", "person", "dog"], "2008_000011": ["diningtable"]}
    for i, (name, objects) in enumerate(layout.items()):
        save_rgb(root / "JPEGImages" / f"{name}.jpg", noise_image(24, 32, 10 + i))
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{name}.xml").write_text(voc_xml(objects), encoding="utf-8")
    write_split(root, "train", list(layout))
    return layout


def write_coco(root: Path) -> dict[str, list[int]]:
    """COCO converted to VOC-style masks, the reference layout; returns name -> classes."""
    layout = {
        ("train2014", "COCO_train2014_000000000009"): [0, 1, 80],
        ("train2014", "COCO_train2014_000000000025"): [0, 25],
        ("val2014", "COCO_val2014_000000000042"): [0, 18],
    }
    for i, ((sub, name), classes) in enumerate(layout.items()):
        save_rgb(root / "JPEGImages" / sub / f"{name}.jpg", noise_image(20, 30, 20 + i))
        short = name.split("_")[-1]
        write_mask_png(root / "SegmentationClass" / sub / f"{short}.png", block_mask(20, 30, classes))
    return {name: [c for c in cls if c] for (_, name), cls in layout.items()}


def write_folder(root: Path, rows: list[str], classes: list[str]) -> None:
    """A folder dataset: images under ``root/img``, ``tags.csv`` rows as given, ``classes.txt``."""
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
    (root / "tags.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    for i, row in enumerate(rows[1:]):
        image = row.split(",")[0]
        if image:
            save_rgb(root / image, noise_image(16, 16, 30 + i))
