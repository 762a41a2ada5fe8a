"""train/runlog.py: metrics.jsonl lines, TensorBoard mirroring, truncation on resume."""

from __future__ import annotations

import json
from pathlib import Path

from seco_deploy.train.runlog import MetricsLog


class _FakeWriter:
    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def close(self) -> None:
        pass


def test_lines_tensorboard_and_truncation(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, tensorboard=False)
    log.tb = _FakeWriter()
    for it in (1, 2, 3):
        log.write("train", {"iteration": it, "lr": 0.1 * it, "cls": float("nan"), "rectified": 2})
    log.write("val", {"iteration": 3, "miou_seg": 0.5})
    log.write("event", {"event": "stop", "iteration": 3, "reason": "time limit"})
    tb = log.tb
    log.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["kind"] for r in rows] == ["train", "train", "train", "val", "event"]
    assert rows[0]["cls"] == "nan" and rows[2]["lr"] == 0.1 * 3  # NaN is written as a string
    assert ("train/lr", 0.2, 2) in tb.scalars and ("val/miou_seg", 0.5, 3) in tb.scalars
    assert not any(tag.endswith("/reason") for tag, _, _ in tb.scalars)  # strings are not scalars
    # A resume from iteration 1 drops what came after it (and a line cut short by a kill).
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "train", "itera')
    assert MetricsLog.truncate_after(tmp_path, 1) == 5
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["kind"], r["iteration"]) for r in rows] == [("train", 1)]
