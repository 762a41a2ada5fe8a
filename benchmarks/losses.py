"""Micro-benchmark: LiL (with rectification) + LiG, forward + backward, at the reference sizes.

B = 4 images x 12 anchors (2 global views + 10 crops), queue 4608, D = 768, C = 20 classes.
The pool is the current keys followed by the queue, as in training.

    .venv/bin/python benchmarks/losses.py [--device cpu] [--repeats 50] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from seco_deploy.losses import lig_loss, lil_loss


def make_inputs(device: torch.device, batch: int = 4, anchors: int = 12, queue: int = 4608, dim: int = 768,
                classes: int = 20, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = batch * anchors
    tags = torch.randint(-1, 4, (n,), generator=g)  # a few classes, background and excluded anchors
    queue_tags = torch.randint(-1, classes + 1, (queue,), generator=g)
    return {
        "q": F.normalize(torch.randn(n, dim, generator=g), dim=1).to(device),
        "keys": F.normalize(torch.randn(n, dim, generator=g), dim=1).to(device),
        "queue": F.normalize(torch.randn(queue, dim, generator=g), dim=1).to(device),
        "tags": tags.to(device),
        "queue_tags": queue_tags.to(device),
        "prototypes": F.normalize(torch.randn(classes, dim, generator=g), dim=1).to(device),
    }


def one_call(x: dict[str, torch.Tensor]) -> torch.Tensor:
    q = x["q"].detach().requires_grad_()
    pool = torch.cat([x["keys"], x["queue"]])
    pool_tags = torch.cat([x["tags"], x["queue_tags"]])
    lil, tags, _ = lil_loss(q, pool, x["tags"], pool_tags, tau=0.08, sigma=0.9)
    lig = lig_loss(q, x["prototypes"], tags, tau=0.1)
    (0.5 * lil + 0.5 * lig).backward()
    return q.grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave as is)")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x = make_inputs(device)
    for _ in range(5):
        one_call(x)
    wall, cpu = [], []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        one_call(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
    print(
        f"LiL+LiG fwd+bwd, B=4 x 12 anchors, queue 4608, D=768, {device}, {torch.get_num_threads()} threads: "
        f"wall median {statistics.median(wall):.2f} ms (min {min(wall):.2f}), "
        f"process CPU median {statistics.median(cpu):.2f} ms per call ({args.repeats} calls)"
    )


if __name__ == "__main__":
    main()
