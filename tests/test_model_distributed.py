"""Prototype and queue updates gather across ranks (2 gloo processes) and agree on every rank."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from _model_helpers import tiny_model_config

from seco_deploy.model.distributed import concat_all_gather, is_distributed
from seco_deploy.model.network import SeCoNet


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # same initial state on both ranks, as DDP would broadcast
        net = SeCoNet(tiny_model_config(queue_size=12), 3)
        keys = F.normalize(torch.full((4, 32), float(rank + 1)), dim=1)
        tags = torch.full((4,), rank + 1)
        net.enqueue(keys, tags)
        labels = torch.zeros(2, 3)
        labels[:, rank] = 1.0  # rank 0: class 1, rank 1: class 2
        used = net.update_prototypes(torch.full((2, 32), float(rank + 1)), labels)
        gathered = concat_all_gather(torch.tensor([rank]))
        torch.save(
            {"queue": net.queue, "tags": net.queue_tags, "ptr": net.queue_ptr, "protos": net.prototypes,
             "used": used, "gathered": gathered, "distributed": is_distributed()},
            f"{out_dir}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns two interpreters (about 30 s on a loaded 2-core machine)
def test_enqueue_and_prototypes_gather_across_two_ranks(tmp_path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["distributed"] and r0["gathered"].tolist() == [0, 1]
    for key in ("queue", "tags", "ptr", "protos"):
        assert torch.equal(r0[key], r1[key]), key
    assert r0["tags"].tolist()[:8] == [1] * 4 + [2] * 4 and int(r0["ptr"]) == 8  # both ranks' keys, rank order
    assert int(r0["used"]) == 4  # 2 single-class images per rank
    torch.manual_seed(0)
    fresh = SeCoNet(tiny_model_config(queue_size=12), 3).prototypes
    assert torch.equal(r0["protos"][2], fresh[2]) and not torch.equal(r0["protos"][0], fresh[0])
