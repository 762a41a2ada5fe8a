"""DDP on CPU: 2 Gloo processes, 3 iterations; every rank ends with the same weights and state."""

from __future__ import annotations

import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from _train_helpers import ddp_worker, make_dataset, read_metrics

from seco_deploy.config import preset
from seco_deploy.runtime.checkpoint import build_network, load_checkpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_stay_identical(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "s", images=24, size=64)
    run, out = tmp_path / "run", tmp_path / "states"
    out.mkdir()
    overrides = ["train.iters=3", "train.eval_every=100", "train.save_every=100"]
    mp.spawn(ddp_worker, args=(2, _free_port(), str(root), str(run), str(out), overrides), nprocs=2, join=True)

    a = torch.load(out / "rank0.pt", weights_only=True)
    b = torch.load(out / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"ranks differ in {key}"
    # The shared state really moved (so equality is not trivial): prototypes and queue were written.
    cfg = preset("test")
    torch.manual_seed(cfg.train.seed)
    init = build_network(cfg, ["background"] + [f"c{i}" for i in range(a["prototypes"].shape[0])]).state_dict()
    assert not torch.equal(a["prototypes"], init["prototypes"])
    assert int(a["queue_ptr"]) > 0
    assert not torch.equal(a["queue"], init["queue"])
    assert not torch.equal(a["classifier.weight"], init["classifier.weight"])

    ckpt = load_checkpoint(run / "last.pt")  # rank 0 wrote it, with both ranks' RNG states
    assert ckpt["iteration"] == 3 and ckpt["world_size"] == 2 and len(ckpt["rng"]["ranks"]) == 2
    for key in a:
        assert torch.equal(ckpt["model"][key], a[key]), key
    lines = read_metrics(run)
    assert [r["iteration"] for r in lines] == [1, 2, 3]
    starts = [e for e in read_metrics(run, "event") if e["event"] == "start"]
    assert starts[0]["effective_batch"] == 2 * cfg.train.batch_size and starts[0]["world_size"] == 2
    assert len(read_metrics(run, "val")) == 1  # validation ran once, sharded over both ranks
