"""ONNX int8 against ONNX fp32 for ViT-S/16 and ViT-B/16 at 448 px, through `seco benchmark`.

For each backbone: a random-init checkpoint (the ``voc`` preset's network with that backbone and
a 448 px crop; the speed does not depend on the weights, and their argmax agreement says little
about accuracy, which ``seco benchmark`` on a trained checkpoint measures), ``--images`` synthetic
448 px images, and ``seco benchmark --formats onnx,onnx-int8`` (int8 calibrated on the same
images). Prints both rows and the int8 / fp32 ratios of end-to-end and model-alone images/s,
measured in one run::

    .venv/bin/python benchmarks/int8.py --threads 1 --images 4
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="vit_small_patch16_224,vit_base_patch16_224")
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", default=None, help="Working folder (default: a temporary one).")
    args = parser.parse_args()

    from seco_deploy.bench.report import table_rows
    from seco_deploy.bench.runner import Benchmark, BenchmarkRequest
    from seco_deploy.config import preset
    from seco_deploy.data.synth import synthesize
    from seco_deploy.train.checkpoint import build_inference_checkpoint

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="seco-bench-int8-"))
    data = work / "data"
    if not (data / "classes.txt").is_file():
        synthesize(data, images=args.images, size=args.size, seed=0, overwrite=True)
    classes = (data / "classes.txt").read_text(encoding="utf-8").split()
    for backbone in args.backbones.split(","):
        ckpt = work / f"{backbone}.pt"
        if not ckpt.is_file():
            build_inference_checkpoint(ckpt, classes, cfg=preset("voc"),
                                       overrides=[f"model.backbone={backbone}", f"data.crop_size={args.size}",
                                                  "model.pretrained=null"])
        request = BenchmarkRequest(checkpoint=ckpt, data=data, formats="onnx,onnx-int8", images=args.images,
                                   device="cpu", threads=args.threads, calib_images=args.images, repeats=2,
                                   latency_images=args.images)
        result = Benchmark(request, progress=lambda text: print(text, flush=True)).run()
        fp32, int8 = result.rows
        for cells in table_rows(result):
            print(" | ".join(cells))
        if fp32.status == int8.status == "measured":
            print(f"{backbone} at {args.size} px: int8 / fp32 end to end {int8.e2e_ips / fp32.e2e_ips:.2f}x, "
                  f"model alone {int8.model_ips / fp32.model_ips:.2f}x, agreement with fp32 not measured here "
                  f"(no PyTorch row); file {fp32.file_mb:.0f} -> {int8.file_mb:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
