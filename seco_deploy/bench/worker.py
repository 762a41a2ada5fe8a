"""One format's measurements in a process of its own: ``python -m seco_deploy.bench.worker SPEC RESULT``.

SPEC is a :class:`~seco_deploy.bench.measure.MeasureSpec` as JSON; the worker writes RESULT (JSON):
the figures, ``{"unavailable": "..."}`` when a runtime or device it needs is missing (the
format's row says so), or ``{"error": "..."}`` with exit 1 when the runtime raised. Progress lines go to
standard error. A runtime that crashes the process (a segmentation fault) leaves no RESULT; the
parent reads the exit status instead (:func:`seco_deploy.export.opencv_dnn.describe_exit`).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from seco_deploy.bench.measure import MeasureSpec, measure
    from seco_deploy.data.io import atomic_write_text
    from seco_deploy.runtime.errors import MissingRuntimeError

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m seco_deploy.bench.worker SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec = MeasureSpec(**json.loads(Path(args[0]).read_text(encoding="utf-8")))
    try:
        result = measure(spec, progress=lambda text: print(f"{spec.format}: {text}", file=sys.stderr, flush=True))
    except MissingRuntimeError as exc:  # e.g. ONNX Runtime without its CUDA provider on a GPU machine
        atomic_write_text(args[1], json.dumps({"unavailable": str(exc)}) + "\n")
        return 0
    except Exception as exc:  # every runtime's own exception types: reported as the row's reason
        traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        atomic_write_text(args[1], json.dumps({"error": f"{type(exc).__name__}: {first}"}) + "\n")
        return 1
    atomic_write_text(args[1], json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
