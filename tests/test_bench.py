"""`seco benchmark`: the table on a tiny model, formats this machine cannot run as rows, crashes as rows,
the export cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from _cli import invoke, said
from _data_helpers import block_mask, noise_image, save_rgb
from _export_helpers import CLASSES

from seco_deploy.bench import formats as formats_module
from seco_deploy.bench import runner as runner_module
from seco_deploy.bench.exports import exported_model
from seco_deploy.bench.formats import FORMATS, parse_formats, unavailable_reason
from seco_deploy.bench.report import BenchmarkResult, Row, table_rows, to_markdown
from seco_deploy.bench.runner import Benchmark, BenchmarkRequest
from seco_deploy.cli.common import EXIT_PARTIAL, EXIT_USAGE
from seco_deploy.data.io import write_mask_png

FAST = {"images": 4, "latency_images": 2, "bare_images": 4, "repeats": 1, "threads": 1, "workers": 0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A random-init ``test``-preset checkpoint and a 6-image VOC-layout set with masks, 64 px."""
    from seco_deploy.train.checkpoint import build_inference_checkpoint

    root = tmp_path_factory.mktemp("bench")
    data = root / "set"
    for i in range(6):
        save_rgb(data / "JPEGImages" / f"img{i}.jpg", noise_image(64, 64, seed=i))
        write_mask_png(data / "SegmentationClass" / f"img{i}.png", block_mask(64, 64, [0, 1 + i % 3]))
    return build_inference_checkpoint(root / "models" / "tiny.pt", CLASSES, seed=3), data


def test_formats_parse_and_refuse_unknown_names() -> None:
    chosen, explicit = parse_formats("onnx-int8, torch")
    assert [f.name for f in chosen] == ["torch", "onnx-int8"]  # table order, not the order typed
    assert explicit == {"torch", "onnx-int8"}
    assert [f.name for f in parse_formats(None)[0]] == list(FORMATS)
    with pytest.raises(ValueError, match="unknown format.*onnx-int4.*choose from"):
        parse_formats("torch,onnx-int4")


def test_unavailable_reasons_name_what_is_missing(monkeypatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(formats_module, "_has_module", lambda name: name != "onnxruntime")
    assert "onnxruntime is not installed" in unavailable_reason(FORMATS["onnx-int8"], cpu)
    assert unavailable_reason(FORMATS["torch"], cpu) is None
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in unavailable_reason(FORMATS["trt-fp16"], cpu)
    monkeypatch.setattr(formats_module, "bf16_is_fast", lambda device: False)
    assert "emulated" in unavailable_reason(FORMATS["torch-bf16"], cpu)
    assert unavailable_reason(FORMATS["torch-bf16"], cpu, explicit=True) is None  # named: measured anyway


def test_table_and_markdown_from_rows() -> None:
    rows = [
        Row("torch", "PyTorch fp32", "measured", miou=41.234, e2e_ips=10.0, model_ips=12.5, latency_p50_ms=80.0,
            latency_p95_ms=95.0, peak_rss_mb=700.0, file_mb=22.0, export_seconds=0.0),
        Row("onnx-int8", "ONNX Runtime int8", "measured", miou=40.5, agreement=0.98765, e2e_ips=20.0,
            model_ips=30.0, model_gflops=37.5, latency_p50_ms=40.0, latency_p95_ms=50.0, peak_rss_mb=600.0, file_mb=6.0,
            export_seconds=31.0, export_cached=True, parity_passed=False),
        Row("trt-fp16", "TensorRT fp16", "unavailable", "no CUDA GPU here"),
    ]
    result = BenchmarkResult(rows, {"cpu": "test"}, {"images": 3})
    cells = table_rows(result)
    assert cells[0][:6] == ["torch", "41.23", "-", "10.00", "12.50", "-"]
    assert cells[1][5] == "37.5"
    assert cells[1][2] == "98.77%" and cells[1][10] == "31.0 (cached)" and "do not deploy" in cells[1][11]
    assert cells[2][1:11] == ["-"] * 10 and cells[2][11] == "unavailable: no CUDA GPU here"
    md = to_markdown(result)
    assert "| trt-fp16 | - |" in md and "- images: 3" in md
    payload = json.loads(result.to_json())
    assert payload["rows"][1]["note"].endswith("do not deploy")


def test_benchmark_table_on_a_tiny_model(tiny, tmp_path) -> None:
    checkpoint, data = tiny
    result = invoke(["benchmark", "--model", checkpoint, "--data", data, "--formats", "torch,trt-fp16",
                     "--images", 4, "--latency-images", 2, "--repeats", 1, "--threads", 1, "--workers", 0,
                     "--out", tmp_path / "report"])
    assert result.exit_code == 0, result.output
    assert said(result, "seco benchmark: 4 images", "written:")
    payload = json.loads((tmp_path / "report" / "benchmark.json").read_text(encoding="utf-8"))
    torch_row, trt_row = payload["rows"]
    assert torch_row["status"] == "measured"
    assert 0 <= torch_row["miou"] <= 100 and torch_row["e2e_ips"] > 0 and torch_row["model_ips"] > 0
    assert torch_row["latency_p50_ms"] <= torch_row["latency_p95_ms"]
    assert torch_row["peak_rss_mb"] > 0 and torch_row["details"]["threads"] == 1
    flops = torch_row["details"]["flops_per_image"]  # the tiny ViT's forward with its flip, counted
    assert flops > 0 and torch_row["model_gflops"] == pytest.approx(torch_row["model_ips"] * flops / 1e9)
    assert trt_row["status"] == "unavailable" and trt_row["note"]
    assert (tmp_path / "report" / "benchmark.md").read_text(encoding="utf-8").count("| torch |") == 1
    masks = sorted((tmp_path / "report" / "runs" / "torch" / "predict" / "masks").iterdir())
    assert len(masks) == 4


def test_onnx_row_agrees_with_pytorch_and_its_export_is_cached(tiny, tmp_path) -> None:
    checkpoint, data = tiny
    request = BenchmarkRequest(checkpoint=checkpoint, data=data, formats="torch,onnx", out=tmp_path / "r1",
                               device="cpu", **FAST)
    rows = Benchmark(request).run().rows
    assert [r.status for r in rows] == ["measured", "measured"], [r.reason for r in rows]
    assert rows[1].agreement > 0.99 and abs(rows[1].miou - rows[0].miou) < 1.0
    assert rows[1].details["flops_per_image"] == rows[0].details["flops_per_image"]  # one network, PyTorch's count
    assert rows[1].model_gflops == pytest.approx(rows[1].model_ips * rows[0].details["flops_per_image"] / 1e9)
    assert not rows[1].export_cached and rows[1].parity_passed
    again = Benchmark(BenchmarkRequest(checkpoint=checkpoint, data=data, formats="onnx", out=tmp_path / "r2",
                                       device="cpu", **FAST)).run().rows[0]
    assert again.export_cached and again.export_seconds == pytest.approx(rows[1].export_seconds, abs=1e-3)
    assert again.agreement is None  # no PyTorch row in this run: nothing to agree with
    assert again.model_gflops is None  # nor a FLOP count


def test_export_cache_is_refreshed_when_the_checkpoint_changes(tiny, tmp_path, monkeypatch) -> None:
    checkpoint, data = tiny
    copy = tmp_path / "copy.pt"
    copy.write_bytes(checkpoint.read_bytes())
    calls = []

    class Outcome:
        parity = None

    def fake_export(request, progress=None):
        calls.append(request)
        Path(request.out).write_bytes(b"onnx %d" % len(calls))
        return Outcome()

    monkeypatch.setattr("seco_deploy.export.exporter.export_checkpoint", fake_export)
    folder = tmp_path / "cache"
    first = exported_model(FORMATS["onnx"], copy, folder, None, 32)
    assert not first.cached and len(calls) == 1
    assert exported_model(FORMATS["onnx"], copy, folder, None, 32).cached and len(calls) == 1
    copy.write_bytes(checkpoint.read_bytes() + b"\0")  # another checkpoint under the same name
    assert not exported_model(FORMATS["onnx"], copy, folder, None, 32).cached and len(calls) == 2
    assert json.loads((folder / "onnx.json").read_text(encoding="utf-8"))["checkpoint_sha256"]


def test_a_crashing_runtime_is_a_failed_row_and_the_rest_go_on(tiny, tmp_path, monkeypatch) -> None:
    checkpoint, data = tiny
    crash = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    real = runner_module.worker_command
    monkeypatch.setattr(runner_module, "worker_command",
                        lambda fmt: [sys.executable, "-c", crash] if fmt.name == "torch-bf16" else real(fmt))
    request = BenchmarkRequest(checkpoint=checkpoint, data=data, formats="torch,torch-bf16", out=tmp_path / "r",
                               device="cpu", **FAST)
    rows = Benchmark(request).run().rows
    assert rows[0].status == "measured"
    assert rows[1].status == "failed" and "signal 11 (SIGSEGV)" in rows[1].reason


def test_cli_exit_codes_for_bad_options_and_failed_rows(tiny, tmp_path, monkeypatch) -> None:
    checkpoint, data = tiny
    result = invoke(["benchmark", "--model", checkpoint, "--data", data, "--formats", "tflite"])
    assert result.exit_code == EXIT_USAGE and said(result, "unknown format(s) tflite")
    result = invoke(["benchmark", "--model", tmp_path / "none.pt", "--data", data])
    assert result.exit_code == EXIT_USAGE and said(result, "does not exist")
    monkeypatch.setattr(runner_module, "worker_command", lambda fmt: [sys.executable, "-c", "raise SystemExit(1)"])
    result = invoke(["benchmark", "--model", checkpoint, "--data", data, "--formats", "torch", "--images", 2,
                     "--out", tmp_path / "r"])
    assert result.exit_code == EXIT_PARTIAL and said(result, "failed: torch: the worker ended: exit 1")


def test_a_runtime_missing_in_the_worker_is_an_unavailable_row(tiny, tmp_path, monkeypatch) -> None:
    checkpoint, data = tiny
    says = ("import json, sys; open(sys.argv[-1], 'w').write(json.dumps("
            "{'unavailable': 'ONNX Runtime here has no CUDA provider'}))")
    monkeypatch.setattr(runner_module, "worker_command", lambda fmt: [sys.executable, "-c", says])
    request = BenchmarkRequest(checkpoint=checkpoint, data=data, formats="torch", out=tmp_path / "r", device="cpu",
                               **FAST)
    row = Benchmark(request).run().rows[0]
    assert row.status == "unavailable" and "no CUDA provider" in row.reason
