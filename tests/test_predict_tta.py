"""Test-time augmentation, resizing, batching and pseudo-label maths of the predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from _predict_helpers import CLASSES, StubBackend, checkpoint, one_thread, read_palette_png, write_image

from seco_deploy.infer.options import PredictOptions
from seco_deploy.infer.predictor import Predictor
from seco_deploy.infer.sources import expand_source
from seco_deploy.infer.tta import input_size
from seco_deploy.runtime.backends import open_backend

__all__ = ["checkpoint", "one_thread"]  # fixtures


def run(backend, source: Path, out: Path, **options) -> Predictor:
    options.setdefault("workers", 0)
    predictor = Predictor(backend, backend.info, PredictOptions(**options))
    summary = predictor.run(expand_source(source), out)
    assert summary.failed == 0
    return predictor


def token_grid(images: torch.Tensor, patch: int = 16) -> tuple[int, int, int]:
    n, _, h, w = images.shape
    return n, h // patch, w // patch


def test_input_side_rounds_to_the_patch() -> None:
    def input_side(base: int, scale: float, patch: int) -> int:
        return input_size((base, base), scale, base, patch)[0]

    assert input_side(448, 1.25, 16) == 560 and input_side(448, 1.5, 16) == 672
    assert input_side(64, 0.1, 16) == 16 and input_side(64, 1.1, 16) == 64 and input_side(64, 1.2, 16) == 80


def test_flip_tta_sums_the_unflipped_flip(tmp_path: Path) -> None:
    # Position-only stub on a 2x2 token grid: class 1 = [[0, 1], [0, 1]], class 2 = 0.6 [[1, 0], [1, 0]],
    # background 0.7. No flip: bilinear upsampling 2 -> 32 puts pixel x at token coordinate
    # t = (x + 0.5) / 16 - 0.5, so class 1 = clamp(t, 0, 1) beats 0.7 from x = 19 (t = 0.72) on and
    # class 2 (at most 0.6) never wins. Flip TTA: logits + mirrored logits -> background 1.4,
    # class 1 = 1, class 2 = 0.6 everywhere: all background.
    def fn(x: torch.Tensor) -> torch.Tensor:
        n, h, w = token_grid(x)
        col = torch.arange(w, dtype=torch.float32).expand(n, h, w)
        return torch.stack([torch.full_like(col, 0.7), col, 0.6 * (1 - col), torch.zeros_like(col)], 1)

    write_image(tmp_path / "in" / "a.png", 32, 32)
    backend = StubBackend(fn, crop=32)
    run(backend, tmp_path / "in", tmp_path / "noflip", flip=False)
    mask = read_palette_png(tmp_path / "noflip" / "masks" / "a.png")
    assert (mask[:, :19] == 0).all() and (mask[:, 19:] == 1).all()
    run(backend, tmp_path / "in", tmp_path / "flip", flip=True)
    assert (read_palette_png(tmp_path / "flip" / "masks" / "a.png") == 0).all()
    assert backend.calls[-1] == (2, 3, 32, 32)  # image and flip in one call


def test_scales_are_fused_by_maximum_not_sum(tmp_path: Path) -> None:
    # Scale 1 (input 32): class 1 = 3, class 2 = 0. Scale 1.5 (input 48): class 1 = -10, class 2 = 2.5.
    # Maximum over scales: class 1 (3 > 2.5); a sum or mean would pick class 2.
    def fn(x: torch.Tensor) -> torch.Tensor:
        n, h, w = token_grid(x)
        out = torch.zeros(n, 4, h, w)
        if x.shape[-1] == 32:
            out[:, 1] = 3.0
        else:
            out[:, 1], out[:, 2] = -10.0, 2.5
        return out

    write_image(tmp_path / "in" / "a.png", 37, 53)
    backend = StubBackend(fn, crop=32)
    run(backend, tmp_path / "in", tmp_path / "out", scales=(1.0, 1.5), flip=True)
    mask = read_palette_png(tmp_path / "out" / "masks" / "a.png")
    assert mask.shape == (37, 53) and (mask == 1).all()
    assert sorted(backend.calls) == [(2, 3, 32, 32), (2, 3, 48, 48)]


def test_images_are_batched_by_input_shape(tmp_path: Path) -> None:
    for i, (h, w) in enumerate([(64, 32), (32, 64), (64, 32), (32, 64), (64, 32)]):
        write_image(tmp_path / "in" / f"{i}.png", h, w, seed=i)
    backend = StubBackend(lambda x: torch.zeros(x.shape[0], 4, x.shape[2] // 16, x.shape[3] // 16), crop=64)
    run(backend, tmp_path / "in", tmp_path / "keep", resize="keep", batch=2, flip=False)
    assert sorted(backend.calls) == [(1, 3, 64, 32), (2, 3, 32, 64), (2, 3, 64, 32)]
    backend.calls.clear()
    run(backend, tmp_path / "in", tmp_path / "square", resize="square", batch=2, flip=False)
    assert sorted(backend.calls) == [(1, 3, 64, 64), (2, 3, 64, 64), (2, 3, 64, 64)]


def test_symmetric_model_gives_symmetric_masks(tmp_path: Path) -> None:
    # A horizontally symmetric stub (its logits follow the mirror-symmetric red channel) on a
    # mirror-symmetric image: flip TTA keeps the mask symmetric.
    def fn(x: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.avg_pool2d(x, 16)
        return torch.stack([pooled[:, 0], pooled[:, 1], pooled[:, 2], 0.5 * pooled.sum(1) / 3], 1) * 0.02

    half = np.random.default_rng(3).integers(0, 256, (40, 24, 3), dtype=np.uint8)
    from PIL import Image

    (tmp_path / "in").mkdir()
    Image.fromarray(np.concatenate([half, half[:, ::-1]], axis=1)).save(tmp_path / "in" / "sym.png")
    run(StubBackend(fn, crop=64), tmp_path / "in", tmp_path / "out", flip=True)
    mask = read_palette_png(tmp_path / "out" / "masks" / "sym.png")
    assert (mask == mask[:, ::-1]).all() and len(np.unique(mask)) > 1


def test_flip_tta_makes_the_real_network_mirror_equivariant(tmp_path: Path, checkpoint: Path) -> None:
    from PIL import Image

    image = np.random.default_rng(5).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    (tmp_path / "in").mkdir()
    Image.fromarray(image).save(tmp_path / "in" / "a.png")
    Image.fromarray(np.ascontiguousarray(image[:, ::-1])).save(tmp_path / "in" / "b.png")
    backend, _ = open_backend(checkpoint, device="cpu")

    def probs(out: Path, name: str) -> np.ndarray:
        return np.load(out / "probs" / f"{name}.npz")["probs"].astype(np.float32)

    run(backend, tmp_path / "in", tmp_path / "flip", flip=True, save_probs=True, probs_scale=1.0)
    a, b = probs(tmp_path / "flip", "a"), probs(tmp_path / "flip", "b")
    assert np.abs(a - b[:, :, ::-1]).max() < 2e-3  # float16 storage
    run(backend, tmp_path / "in", tmp_path / "noflip", flip=False, save_probs=True, probs_scale=1.0)
    a, b = probs(tmp_path / "noflip", "a"), probs(tmp_path / "noflip", "b")
    assert np.abs(a - b[:, :, ::-1]).max() > 1e-2  # without flip TTA the random network is not symmetric


def test_pseudo_labels_hand_case(tmp_path: Path) -> None:
    # CAM = ReLU of the stub's class channels on a 2x2 grid: cat = [[4, 0], [0, 0]], dog = [[0, 0], [0, 2]],
    # boat = 1 everywhere but the top-left. Normalised per class to [0, 1]. Tags {cat, dog}: top-left cat,
    # bottom-right dog, the rest background (0 <= 0.5); boat never appears although its CAM is 1 there.
    def fn(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        out = torch.zeros(n, 4, 2, 2)
        out[:, 1, 0, 0] = 4.0
        out[:, 2, 1, 1] = 2.0
        out[:, 3] = 1.0
        out[:, 3, 0, 0] = 0.0
        return out

    write_image(tmp_path / "in" / "a.png", 32, 32)
    (tmp_path / "tags.csv").write_text("image,tags\na.png,cat;dog\n", encoding="utf-8")
    from seco_deploy.infer.tags import TagTable

    backend = StubBackend(fn, crop=32)
    tags = TagTable(tmp_path / "tags.csv", CLASSES)
    run(backend, tmp_path / "in", tmp_path / "out", mode="pseudo", tags=tags, flip=False)
    mask = read_palette_png(tmp_path / "out" / "masks" / "a.png")
    assert mask[0, 0] == 1 and mask[31, 31] == 2 and mask[0, 31] == 0 and mask[31, 0] == 0
    assert 3 not in np.unique(mask)
    # Without tags, the classifier (stub: max of each class map > 0) keeps all three; boat appears.
    run(backend, tmp_path / "in", tmp_path / "cls", mode="pseudo", flip=False, cls_threshold=0.5)
    assert 3 in np.unique(read_palette_png(tmp_path / "cls" / "masks" / "a.png"))
