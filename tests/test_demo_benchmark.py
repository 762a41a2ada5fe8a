"""benchmarks/cooccurrence.py on a tiny set (test preset, two variants): table, JSON and report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "cooccurrence.py"), "--preset", "test", "--images", "16",
           "--size", "64", "--minutes", "0.5", "--variants", "a,d", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "a plain-CAM baseline" in proc.stdout and "d full SeCo" in proc.stdout
    data = json.loads((out / "cooccurrence.json").read_text(encoding="utf-8"))
    assert set(data["variants"]) == {"a", "d"}
    a, d = data["variants"]["a"], data["variants"]["d"]
    assert a["switches"]["use_decomposition"] is False and d["switches"]["use_rectification"] is True
    for v in (a, d):
        assert 0.0 <= v["pseudo_miou_train"] <= 1.0 and 0.0 <= v["decoder_miou_val"] <= 1.0
        assert set(v["cooccurrence"]) == {"boat", "train", "horse", "person"}
        assert v["iterations"] >= 1
        assert Path(v["pred_dir"], "cams").is_dir()
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="comparison"' in html and "baseline CAM" in html and "SeCo CAM" in html


def test_benchmark_rejects_unknown_variant(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "cooccurrence.py"), "--variants", "a,z", "--out",
           str(tmp_path / "b")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert "unknown ['z']" in proc.stderr
