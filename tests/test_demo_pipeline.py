"""`seco demo` end to end on a tiny set (test preset, seconds), its report and its CLI errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _cli import invoke, said
from _demo_helpers import run_tiny_demo

from seco_deploy.demo.report import DEMO_SECTIONS


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("demo")
    return run_tiny_demo(out)


def test_demo_writes_every_stage(tiny_demo) -> None:
    out = tiny_demo.out
    assert (out / "data" / "synth.json").is_file()
    assert (out / "run" / "last.pt").is_file()
    assert (out / "run" / "metrics.jsonl").is_file()
    assert (out / "model.onnx").is_file()
    val = (out / "data" / "ImageSets" / "Segmentation" / "val.txt").read_text(encoding="utf-8").split()
    train = (out / "data" / "ImageSets" / "Segmentation" / "train.txt").read_text(encoding="utf-8").split()
    for name in val:
        assert (out / "pred" / "mask" / "masks" / f"{name}.png").is_file()
        assert (out / "pred" / "pseudo" / "cams" / f"{name}.jpg").is_file()
    for name in train + val:
        assert (out / "pred" / "pseudo" / "masks" / f"{name}.png").is_file()
    for name in train:
        assert (out / "pred" / "aux_cam" / f"{name}.png").is_file()


def test_demo_figures(tiny_demo) -> None:
    data = json.loads((tiny_demo.out / "figures.json").read_text(encoding="utf-8"))
    products = data["products"]
    assert set(products) == {"CAM pseudo-labels", "CAM pseudo-labels (val)", "aux CAM pseudo-labels", "decoder masks"}
    for label, product in products.items():
        scores = product["scores"]
        assert scores["missing"] == [], label
        assert 0.0 <= scores["miou"] <= 1.0
        names = [row["name"] for row in scores["classes"]]
        assert names[0] == "background" and "boat" in names
    co = products["CAM pseudo-labels"]["scores"]["cooccurrence"]
    assert set(co) == {"boat", "train", "horse", "person"}
    assert co["boat"]["kind"] == "context" and co["boat"]["other"] == "water"
    assert "ONNX" in products["decoder masks"]["how"]
    assert tiny_demo.figures["headline"].startswith("mIoU: ")
    assert "parity ok" in data["settings"]["model"]
    assert data["settings"]["CAM pseudo-label scales"] == "1, 1.5"  # the demo's default --cam-scales


def test_report_has_every_section(tiny_demo) -> None:
    html = tiny_demo.report.read_text(encoding="utf-8")
    for section in DEMO_SECTIONS:
        assert f'<section id="{section}">' in html, section
    assert '<section id="ladder">' in html and "profile <code>partial</code>" in html  # the set's own ladder
    body = {sid: part for sid, part in re.findall(r'<section id="([^"]+)">(.*?)</section>', html, flags=re.S)}
    assert "<table" in body["miou"] and "decoder masks" in body["miou"]
    assert "FP:TP" in body["per-class"]
    assert "water" in body["cooccurrence"] and "rails" in body["cooccurrence"]
    assert body["curves"].count("data:image/png;base64,") == 1  # matplotlib is installed in the dev venv
    # grid: 3 rows x 5 columns of embedded tiles
    assert body["examples"].count("data:image/png;base64,") == 15
    for column in ("image", "ground truth", "CAM heatmap", "pseudo-label (CAM)", "decoder mask"):
        assert f"<th>{column}</th>" in body["examples"]


def test_report_without_matplotlib(tiny_demo, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from seco_deploy.demo import plots
    from seco_deploy.demo.pipeline import write_demo_report

    monkeypatch.setattr(plots, "have_matplotlib", lambda: False)
    data = json.loads((tiny_demo.out / "figures.json").read_text(encoding="utf-8"))
    out = tiny_demo.out
    report = write_demo_report(tmp_path, out / "data", out / "run", out / "pred", data["products"],
                               {"settings": data["settings"], "headline": "h"}, 2, 16.0)
    html = report.read_text(encoding="utf-8")
    assert "Training curves need matplotlib" in html
    assert 'id="examples"' in html and html.count("data:image/png;base64,") == 10
    assert 'id="ladder"' not in html  # no profile given: no shipped ladder to show


@pytest.mark.parametrize(
    "args, message",
    [
        (["--minutes", "0"], "--minutes must be positive"),
        (["--images", "3"], "--images must be at least 10"),
        (["--difficulty", "nope"], "--difficulty 'nope'"),
        (["--checkpoint", "/nonexistent/last.pt"], "does not exist"),
        (["--cam-scales", "1.0,0"], "--cam-scales '1.0,0' must list positive numbers"),
    ],
)
def test_cli_usage_errors(args: list[str], message: str, tmp_path: Path) -> None:
    result = invoke(["demo", "--out", str(tmp_path / "d"), *args])
    assert result.exit_code == 2
    assert said(result, message)


def test_cli_reuses_checkpoint_and_prints_report_path(tiny_demo, tmp_path: Path) -> None:
    out = tmp_path / "d"
    result = invoke(["demo", "--out", str(out), "--preset", "test", "--images", "16", "--size", "64",
                                      "--examples", "2", "--checkpoint", str(tiny_demo.out / "run" / "last.pt")])
    assert result.exit_code == 0, result.output
    assert said(result, f"report: {out / 'report.html'}")
    assert said(result, "mIoU: CAM pseudo-labels")
    assert not (out / "run").exists()  # training skipped
    assert "reused" in json.loads((out / "figures.json").read_text(encoding="utf-8"))["settings"]["training"]
