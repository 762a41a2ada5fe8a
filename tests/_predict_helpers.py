"""Helpers for the `seco predict` tests: a tiny real checkpoint, image files, a stand-in backend."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from _cli import invoke
from PIL import Image

from seco_deploy.data.palette import VOC_PALETTE
from seco_deploy.runtime.backends import Backend, ModelInfo

CLASSES = ["background", "cat", "dog", "boat"]
_CHECKPOINTS: dict[str, Path] = {}


def tiny_checkpoint(folder: Path) -> Path:
    """A random-init ``test``-preset checkpoint (ViT depth 3, width 32, crop 64) with :data:`CLASSES`.

    Built once per test session (cached by folder).
    """
    key = str(folder)
    if key not in _CHECKPOINTS:
        from seco_deploy.train.checkpoint import build_inference_checkpoint

        folder.mkdir(parents=True, exist_ok=True)
        _CHECKPOINTS[key] = build_inference_checkpoint(folder / "tiny.pt", CLASSES, seed=0)
    return _CHECKPOINTS[key]


def write_image(path: Path, h: int, w: int, mode: str = "RGB", seed: int = 0) -> Path:
    """Smooth random image (blocks of colour, so JPEG keeps it recognisable) of ``mode``."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, h // 8), max(1, w // 8), 4), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small, "RGBA").resize((w, h), Image.NEAREST))
    image = Image.fromarray(big, "RGBA")
    if mode != "RGBA":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file."""
    with Image.open(path) as im:
        return im.size[1], im.size[0]


def read_palette_png(path: Path) -> np.ndarray:
    """Index array of a palette PNG; asserts mode ``P``."""
    with Image.open(path) as im:
        assert im.mode == "P", f"{path} is {im.mode}, not a palette PNG"
        return np.asarray(im)


def outputs_of(out: Path, kind: str = "masks") -> dict[str, bytes]:
    """``{relative path: bytes}`` of every file under ``out/kind``."""
    root = out / kind
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def every_file(root: Path) -> set[str]:
    out = set()
    for dirpath, _, files in os.walk(root):
        for f in files:
            out.add(os.path.join(dirpath, f))
    return out




def seco(*args: str):
    """Run ``seco ARGS`` in this process; returns typer's Result (``exit_code``, ``output``)."""
    return invoke(args)


class StubBackend(Backend):
    """A stand-in backend: ``seg = fn(images)``; CAMs are the foreground channels of ``seg``, ReLU'd.

    ``fn`` maps normalised (N, 3, H, W) images to (N, C+1, H/p, W/p) logits. Every call's input
    shape is recorded in ``calls``.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], classes: list[str] = CLASSES, patch: int = 16,
                 crop: int = 64, scales: tuple[float, ...] = (1.0,)) -> None:
        self.fn = fn
        self.device = torch.device("cpu")
        self.calls: list[tuple[int, ...]] = []
        self.info = ModelInfo(
            classes=list(classes), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), patch_size=patch, crop_size=crop,
            mask_scales=scales, cam_scales=scales, heads=("seg", "cam"), palette=np.array(VOC_PALETTE),
            source="stub",
        )

    def __call__(self, images: torch.Tensor, with_cam: bool = False) -> dict[str, torch.Tensor]:
        self.calls.append(tuple(images.shape))
        seg = self.fn(images).float()
        out = {"seg": seg}
        if with_cam:
            out["cam"] = torch.relu(seg[:, 1:])
            out["cls"] = seg[:, 1:].amax(dim=(2, 3))
        return out


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny real checkpoint of :func:`tiny_checkpoint`, once per session."""
    return tiny_checkpoint(tmp_path_factory.getbasetemp() / "predict_ckpt")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread per test module: on a shared 2-core machine this is faster for tiny inputs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
