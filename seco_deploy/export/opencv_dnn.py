"""OpenCV DNN as a reader of our ONNX exports, always probed in a child process.

``cv2.dnn.readNetFromONNX`` can crash the process (a segmentation fault on the dynamo exporter's
graphs, see :mod:`seco_deploy.export.onnx_export`), so nothing here loads OpenCV DNN in the
caller's process except :class:`OpenCVRunner`, which callers use only inside a child of their own
(``seco benchmark`` measures every format in one).

- :class:`OpenCVRunner`: ``run(images) -> {output name: tensor}`` with ``cv2.dnn`` (CPU, fp32);
- :func:`probe_opencv`: run the file with OpenCV DNN on given inputs in a child process
  (``python -m seco_deploy.export.opencv_dnn MODEL IN.npz OUT.npz``); returns the outputs, or
  :class:`OpenCVProbeError` saying how the child ended (``crashed: signal 11 (SIGSEGV)``).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from seco_deploy.runtime.card import ModelCard, onnx_props

__all__ = ["OpenCVProbeError", "OpenCVRunner", "probe_opencv"]


class OpenCVProbeError(RuntimeError):
    """OpenCV DNN could not read or run the model (the message says how the child process ended)."""


class OpenCVRunner:
    """An OpenCV DNN network over one exported ``.onnx`` (``--target opencv``); CPU, fp32."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import cv2

        self.path = Path(path)
        if threads is not None:
            cv2.setNumThreads(int(threads))
        self.card = ModelCard.from_props(onnx_props(self.path), source=str(self.path))
        self.net = cv2.dnn.readNetFromONNX(str(self.path))
        self.output_names = list(self.card.output_names)
        self.device = torch.device("cpu")

    def run(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        self.net.setInput(x)
        outs = self.net.forward(self.output_names)
        return {name: torch.from_numpy(np.array(out)) for name, out in zip(self.output_names, outs, strict=True)}


def describe_exit(code: int) -> str:
    """A child's return code in words: ``exit 1`` or ``crashed: signal 11 (SIGSEGV)``."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown"
        return f"crashed: signal {-code} ({name})"
    return f"exit {code}"


def probe_opencv(path: str | Path, inputs: list[torch.Tensor], timeout: float = 600) -> list[dict[str, torch.Tensor]]:
    """OpenCV DNN's outputs for each of ``inputs`` (N, 3, H, W), computed in a child process."""
    with tempfile.TemporaryDirectory(prefix="seco-opencv-") as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, **{f"x{i}": x.numpy() for i, x in enumerate(inputs)})
        try:
            command = [sys.executable, "-m", "seco_deploy.export.opencv_dnn", str(path), str(src), str(dst)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise OpenCVProbeError(f"OpenCV DNN did not finish in {timeout:g} s") from exc
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [""])[-1][:300]
            raise OpenCVProbeError(f"OpenCV DNN on {path}: {describe_exit(done.returncode)}"
                                   + (f" ({last})" if last else ""))
        data = np.load(dst)
        outs: list[dict[str, torch.Tensor]] = [{} for _ in inputs]
        for key in data.files:
            index, name = key.split(":", 1)
            outs[int(index)][name] = torch.from_numpy(data[key])
        return outs


def _child(model: str, src: str, dst: str) -> None:
    runner = OpenCVRunner(model)
    data = np.load(src)
    result = {}
    for i in range(len(data.files)):
        for name, value in runner.run(torch.from_numpy(data[f"x{i}"])).items():
            result[f"{i}:{name}"] = value.numpy()
    np.savez(dst, **result)


if __name__ == "__main__":
    _child(*sys.argv[1:4])
