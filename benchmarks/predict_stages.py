"""The wall time of each of `seco predict`'s stages per image, run one after another in one thread.

With the predictor's public stages (:mod:`seco_deploy.infer.predictor`) on ``--images`` synthetic
224 px images and a random-init ``cpu`` preset checkpoint (ViT-Tiny/16, crop 160, flip TTA), batch
``--batch``, ``--threads`` torch threads, per round:

- ``decode``: ``read_image`` of every image;
- ``preprocess``: :meth:`Predictor.preprocess` (the batch as float runs);
- ``forward``: the backend's calls inside :meth:`Predictor.infer`, the model alone
  (:class:`~seco_deploy.bench.measure.TimedBackend`);
- ``inputs+fusion``: the rest of :meth:`Predictor.infer` (resize to the crop, flip, normalise; the
  TTA fusion of the outputs);
- ``postprocess``: upsampling to the image's size and the argmax (:meth:`Predictor.postprocess`);
- ``write``: :meth:`Predictor.write` (the palette PNG, atomic and fsync'ed, and the manifest record).

It prints ms per image for each and the bound they set: when nothing overlaps the model, end to
end / model alone = forward / (forward + the rest). On a machine whose cores the model's threads
fill, overlapping the rest with the model cannot beat that bound by much::

    .venv/bin/python benchmarks/predict_stages.py --amp off
    .venv/bin/python benchmarks/predict_stages.py --amp bf16
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: predict's)")
    parser.add_argument("--amp", default="off", help="off | bf16")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import torch

    from seco_deploy.bench.measure import TimedBackend
    from seco_deploy.config import preset
    from seco_deploy.data.io import read_image
    from seco_deploy.data.synth import synthesize
    from seco_deploy.infer.decode import Decoded
    from seco_deploy.infer.options import PredictOptions, default_threads
    from seco_deploy.infer.outputs import OutputPaths
    from seco_deploy.infer.predictor import Predictor
    from seco_deploy.infer.sources import expand_source
    from seco_deploy.runtime.backends import TorchBackend
    from seco_deploy.train.checkpoint import build_inference_checkpoint

    work = Path(tempfile.mkdtemp(prefix="seco-predict-stages-"))
    try:
        synthesize(work / "data", images=args.images, size=224, seed=0, overwrite=True)
        classes = (work / "data" / "classes.txt").read_text(encoding="utf-8").split()
        ckpt = build_inference_checkpoint(work / "cpu_random.pt", classes, cfg=preset("cpu"))
        threads = args.threads or default_threads()
        torch.set_flush_denormal(True)
        torch.set_num_threads(threads)
        backend = TimedBackend(TorchBackend(ckpt, device="cpu", amp=args.amp))
        predictor = Predictor(backend, backend.info, PredictOptions(batch=args.batch, workers=0, overwrite=True))
        items = expand_source(str(work / "data" / "JPEGImages"))[: args.images]
        out = work / "out"
        predictor.prepare_output(out)
        print(f"{len(items)} images, batch {args.batch}, {threads} thread(s), amp {args.amp}, "
              f"scales {predictor.scales}, flip {predictor.options.flip}", flush=True)
        for _ in range(args.rounds):
            seconds = dict.fromkeys(("decode", "preprocess", "forward", "inputs+fusion", "postprocess", "write"),
                                    0.0)
            for start in range(0, len(items), args.batch):
                group = items[start : start + args.batch]
                t0 = time.perf_counter()
                decoded = [Decoded(i, torch.from_numpy(read_image(it.path)), 0.0) for i, it in enumerate(group)]
                t1 = time.perf_counter()
                batch = predictor.preprocess(decoded)
                t2 = time.perf_counter()
                backend.seconds = 0.0
                fused = predictor.infer(batch)
                t3 = time.perf_counter()
                results = predictor.postprocess(batch, fused)
                t4 = time.perf_counter()
                for sample, result in results:
                    item = group[sample.index]
                    predictor.write(item, OutputPaths.for_name(out, item.name), out, None, result, 0.0)
                t5 = time.perf_counter()
                seconds["decode"] += t1 - t0
                seconds["preprocess"] += t2 - t1
                seconds["forward"] += backend.seconds
                seconds["inputs+fusion"] += t3 - t2 - backend.seconds
                seconds["postprocess"] += t4 - t3
                seconds["write"] += t5 - t4
            per = {k: 1000 * v / len(items) for k, v in seconds.items()}
            rest = sum(per.values()) - per["forward"]
            print("  " + ", ".join(f"{k} {v:.2f}" for k, v in per.items())
                  + f" ms/img; around the model {rest:.2f} ms/img; bound without overlap "
                    f"{per['forward'] / (per['forward'] + rest):.2f}", flush=True)
        backend.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
