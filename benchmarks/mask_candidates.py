"""Masks over the classes that can win against the argmax over every class, on the same logits.

:func:`seco_deploy.infer.tta.fused_masks` rules out classes that lie below another at every
corner of every bilinear cell and upsamples only the rest. This times it against the all-class
path (``argmax_uint8(fuse_seg(...))``) on the same decoder logits, interleaved ``--repeats``
times per batch, checks that the masks are identical, and prints the candidates per image and
the ratio of the times:

- ``--model CKPT --images DIR``: a trained checkpoint's logits on the images (predict's own
  preprocess and TTA, batch ``--batch``, at most ``--limit`` images);
- without them: synthetic logits of ``--classes`` classes at stride 16 of ``--height`` x
  ``--width`` images, a strong background and ``--present`` Gaussian blobs of other classes each.

    .venv/bin/python benchmarks/mask_candidates.py --model runs/demo/run/last.pt \\
        --images runs/demo/data/JPEGImages --limit 160 --threads 1
    .venv/bin/python benchmarks/mask_candidates.py --classes 21 --height 375 --width 500 --present 3
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path


def synthetic(args: argparse.Namespace) -> Iterator[tuple[list, int, tuple[int, int]]]:
    import torch

    g = torch.Generator().manual_seed(0)
    h, w = -(-args.height // 16), -(-args.width // 16)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    for _ in range(args.batches):
        seg = torch.full((args.batch, args.classes, h, w), -4.0) + 0.5 * torch.randn(args.batch, args.classes, h, w,
                                                                                        generator=g)
        seg[:, 0] += 6.0
        for i in range(args.batch):
            for c in (torch.randperm(args.classes - 1, generator=g)[: args.present - 1] + 1).tolist():
                cy, cx = (int(torch.randint(0, n, (1,), generator=g)) for n in (h, w))
                seg[i, c] += 12.0 * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (h / 5) ** 2))
        yield [seg], args.batch, (args.height, args.width)


def from_model(args: argparse.Namespace) -> Iterator[tuple[list, int, tuple[int, int]]]:
    import torch

    from seco_deploy.data.io import read_image
    from seco_deploy.infer.decode import Decoded
    from seco_deploy.infer.options import PredictOptions
    from seco_deploy.infer.predictor import Predictor
    from seco_deploy.runtime.backends import open_backend

    backend, info = open_backend(args.model, device="cpu", threads=args.threads)
    predictor = Predictor(backend, info, PredictOptions(batch=args.batch, workers=0))
    files = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    files = files[: args.limit]
    by_size: dict[tuple[int, ...], list] = {}
    for f in files:
        image = torch.from_numpy(read_image(f))
        by_size.setdefault(tuple(image.shape), []).append(image)
    for images in by_size.values():
        for start in range(0, len(images), args.batch):
            part = images[start : start + args.batch]
            batch = predictor.preprocess([Decoded(i, im, 0.0) for i, im in enumerate(part)])
            yield predictor.infer(batch).segs, len(part), tuple(part[0].shape[:2])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--images", default=None)
    parser.add_argument("--limit", type=int, default=160)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--present", type=int, default=3, help="classes per synthetic image, background included")
    parser.add_argument("--batches", type=int, default=10, help="synthetic batches")
    args = parser.parse_args(argv)
    if (args.model is None) != (args.images is None):
        parser.error("--model and --images go together")

    import numpy as np
    import torch

    from seco_deploy.infer.refine import argmax_uint8
    from seco_deploy.infer.tta import fuse_seg, fused_masks, mask_candidates

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    source = from_model(args) if args.model else synthetic(args)
    counts: list[int] = []
    spent = {"all classes": 0.0, "candidates": 0.0}
    images = 0
    identical = True
    for segs, n, size in source:
        one = slice(0, n)
        counts += mask_candidates(segs, one).sum(dim=1).tolist()
        images += n
        for _ in range(args.repeats):
            t = time.perf_counter()
            full = argmax_uint8(fuse_seg(segs, one, size))
            spent["all classes"] += time.perf_counter() - t
            t = time.perf_counter()
            pruned = fused_masks(segs, one, size)
            spent["candidates"] += time.perf_counter() - t
            identical &= bool(np.array_equal(full, pruned))
    k = segs[0].shape[1]
    per = {key: 1e3 * v / (args.repeats * images) for key, v in spent.items()}
    print(f"{images} images, {k} classes, {torch.get_num_threads()} thread(s); candidate classes per image: mean "
          f"{np.mean(counts):.2f}, counts {np.bincount(counts, minlength=k + 1)[1:].tolist()} (1..{k})")
    print(f"ms per image: all classes {per['all classes']:.2f}, candidates {per['candidates']:.2f}; ratio "
          f"{per['all classes'] / per['candidates']:.2f}x; masks identical: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
