#!/usr/bin/env bash
# One unattended GPU check of the whole deployment path (under 10 minutes on one GPU):
#   synthetic data -> a few training iterations with AMP on CUDA -> ONNX export (fp32 and fp16)
#   with parity checks -> TensorRT engines (fp32 and fp16) with parity checks on the GPU, where
#   TensorRT is installed -> `seco predict` with the checkpoint, the ONNX model and the engines
#   -> mask agreement between backends -> `seco benchmark` (every format side by side) -> the
#   TensorRT GPU tests -> the paper's configuration (`voc` preset: ViT-B/16, 448 px crop, batch 4)
#   trained 60 iterations with every loss term on for the last 40, and `seco benchmark` on it.
#   Prints every figure.
#
# Usage (from anywhere):  benchmarks/gpu_check.sh [WORK_DIR]
#   PYTHON=/path/to/python   interpreter with seco-deploy installed (default: .venv/bin/python)
#   ITERS=30                 training iterations (default 30)
#   DEVICE=cuda              cpu runs the same flow without a GPU (a dry run of this script)
#   PAPER=1                  the paper-configuration step (default: 1 on a GPU, 0 with DEVICE=cpu)
#   PAPER_PRESET=voc PAPER_SIZE=448   its preset and image size (dry run: PAPER_PRESET=test PAPER_SIZE=64)
# Steps that need something missing (TensorRT, onnxruntime-gpu) print SKIP with the reason and
# the script goes on; it exits non-zero only when a step that could run failed (exit 5 when
# there is no CUDA GPU at all).
set -u -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 1
PY="${PYTHON:-$REPO/.venv/bin/python}"
WORK="${1:-$(mktemp -d /tmp/seco-gpu-check.XXXXXX)}"
ITERS="${ITERS:-30}"
DEVICE="${DEVICE:-cuda}"
mkdir -p "$WORK"
SECO=("$PY" -m seco_deploy.cli)
FAILED=()
START=$(date +%s)

say() { printf '\n=== %s (t=%ss)\n' "$*" "$(( $(date +%s) - START ))"; }
run() {  # run NAME CMD...: run a step, record a failure, never stop the script
  local name="$1"; shift
  say "$name"
  echo "+ $*"
  if ! timeout 300 "$@"; then
    echo "FAILED: $name"
    FAILED+=("$name")
    return 1
  fi
}

say "environment"
DEVICE="$DEVICE" "$PY" - <<'EOF' || { echo "FAILED: no usable CUDA GPU; this check needs one (DEVICE=cpu: dry run)"; exit 5; }
import sys
import torch, onnxruntime as ort
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), onnxruntime {ort.__version__}")
print("onnxruntime providers:", ", ".join(ort.get_available_providers()))
try:
    import tensorrt
    print("tensorrt", tensorrt.__version__)
except ImportError:
    print("tensorrt: not installed")
import os
if os.environ["DEVICE"] != "cpu" and not torch.cuda.is_available():
    sys.exit(1)
for i in range(torch.cuda.device_count()):
    print(f"cuda:{i}", torch.cuda.get_device_name(i), f"bf16={torch.cuda.is_bf16_supported()}")
EOF
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true

HAS_TRT=0
"$PY" -c "import tensorrt" 2>/dev/null && HAS_TRT=1
HAS_ORT_CUDA=0
"$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" 2>/dev/null \
  && HAS_ORT_CUDA=1
AMP=bf16
[ "$DEVICE" != cpu ] && AMP=$("$PY" -c "import torch; print('bf16' if torch.cuda.is_bf16_supported() else 'fp16')")

run "synthetic data" "${SECO[@]}" data synth "$WORK/data" --images 96 --size 96 --seed 0
run "train $ITERS iterations on $DEVICE with --amp $AMP" \
  "${SECO[@]}" train --data "$WORK/data" --preset test --out "$WORK/run" --device "$DEVICE" --amp "$AMP" --iters "$ITERS"
CKPT="$WORK/run/last.pt"
if [ ! -f "$CKPT" ]; then
  echo "FAILED: no checkpoint at $CKPT; the remaining steps need one"
  exit 1
fi
run "info checkpoint" "${SECO[@]}" info "$CKPT"

# --- ONNX: fp32 and fp16, parity on the CPU (and with the CUDA provider when present)
run "export ONNX fp32 (parity on CPU)" "${SECO[@]}" export "$CKPT" --format onnx --out "$WORK/model.onnx" \
  --heads seg,cam --json "$WORK/onnx_fp32.json"
run "export ONNX fp16 (parity on CPU)" "${SECO[@]}" export "$CKPT" --format onnx --fp16 \
  --out "$WORK/model_fp16.onnx" --heads seg,cam --json "$WORK/onnx_fp16.json"
if [ "$HAS_ORT_CUDA" = 1 ]; then
  run "parity ONNX fp32 with the CUDA provider" "${SECO[@]}" export "$CKPT" --out "$WORK/model.onnx" \
    --check-only --device cuda
else
  say "SKIP ONNX Runtime CUDA provider: onnxruntime-gpu is not installed (pip install onnxruntime-gpu)"
fi
run "info ONNX" "${SECO[@]}" info "$WORK/model.onnx"

# --- TensorRT: fp32 and fp16 engines, parity on the GPU
ENGINES=()
if [ "$HAS_TRT" = 1 ] && [ "$DEVICE" != cpu ]; then
  run "TensorRT engine fp32 (parity on GPU)" "${SECO[@]}" export "$CKPT" --format trt --out "$WORK/model.engine" \
    --heads seg,cam --timing-cache "$WORK/timing.cache" --json "$WORK/trt_fp32.json" && ENGINES+=("$WORK/model.engine")
  run "TensorRT engine fp16, LayerNorm fp32 (parity on GPU)" "${SECO[@]}" export "$CKPT" --format trt --fp16 \
    --out "$WORK/model_fp16.engine" --heads seg,cam --timing-cache "$WORK/timing.cache" \
    --json "$WORK/trt_fp16.json" && ENGINES+=("$WORK/model_fp16.engine")
  [ -f "$WORK/model.engine" ] && run "info engine" "${SECO[@]}" info "$WORK/model.engine"
else
  say "SKIP TensorRT: not installed (pip install 'tensorrt-cu12>=10' or tensorrt-cu13 to match torch's CUDA)"
  "${SECO[@]}" export "$CKPT" --format trt --out "$WORK/none.engine" >/dev/null 2>&1
  echo "seco export --format trt without TensorRT exits with $? (expected 5)"
fi

# --- predict with every backend, mask and pseudo modes
IMAGES="$WORK/data/JPEGImages"
predict() {  # predict TAG MODEL DEVICE [extra...]
  local tag="$1" model="$2" device="$3"; shift 3
  for mode in mask pseudo; do
    local extra=()
    [ "$mode" = pseudo ] && extra=(--tags "$WORK/data/tags.csv")
    run "predict $mode with $tag" "${SECO[@]}" predict "$IMAGES" --model "$model" --out "$WORK/pred_${tag}_$mode" \
      --mode "$mode" --device "$device" --batch 8 -q "${extra[@]}" "$@"
  done
}
predict pt "$CKPT" "$DEVICE"
predict pt_amp "$CKPT" "$DEVICE" --amp "$AMP"
predict onnx_cpu "$WORK/model.onnx" cpu
predict onnx16_cpu "$WORK/model_fp16.onnx" cpu
if [ "$HAS_ORT_CUDA" = 1 ]; then
  predict onnx_cuda "$WORK/model.onnx" cuda
  predict onnx16_cuda "$WORK/model_fp16.onnx" cuda
fi
for engine in "${ENGINES[@]}"; do
  predict "$(basename "$engine" .engine)" "$engine" cuda
done

say "mask agreement with the PyTorch fp32 checkpoint (pixels equal)"
"$PY" - "$WORK" <<'EOF'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
work = Path(sys.argv[1])
for mode in ("mask", "pseudo"):
    ref_dir = work / f"pred_pt_{mode}" / "masks"
    refs = sorted(ref_dir.glob("*.png"))
    for other in sorted(work.glob(f"pred_*_{mode}")):
        if other.name == f"pred_pt_{mode}":
            continue
        same = total = 0
        for ref in refs:
            cand = other / "masks" / ref.name
            if not cand.is_file():
                continue
            a, b = np.array(Image.open(ref)), np.array(Image.open(cand))
            same += int((a == b).sum()); total += a.size
        share = same / total if total else float("nan")
        print(f"{mode:6s} {other.name:28s} {share:.4%} of {total} pixels equal to PyTorch fp32")
EOF

# --- every format side by side on the same images (formats this machine cannot run are rows saying why)
run "seco benchmark on $DEVICE" "${SECO[@]}" benchmark --model "$CKPT" --data "$WORK/data" --images 48 \
  --device "$DEVICE" --out "$WORK/benchmark" --timeout 240
[ -f "$WORK/benchmark/benchmark.md" ] && cat "$WORK/benchmark/benchmark.md"

say "parity figures (max |diff|, argmax agreement)"
"$PY" - "$WORK" <<'EOF'
import json, sys
from pathlib import Path
for f in sorted(Path(sys.argv[1]).glob("*.json")):
    try:
        data = json.loads(f.read_text())
    except ValueError:
        continue
    p = data.get("parity") if isinstance(data, dict) else None
    if p:
        print(f"{f.stem:10s} passed={p['passed']} max|diff|={p['max_abs_diff']:.3e} "
              f"agreement={p['min_agreement']:.4%} ({p['tolerance']}) engine={data.get('engine', {}).get('profile', '')}")
EOF

if [ "$HAS_TRT" = 1 ] && [ "$DEVICE" != cpu ]; then
  run "TensorRT GPU tests" "$PY" -m pytest -q -m gpu tests/test_export_tensorrt.py -p no:cacheprovider
fi

# --- the paper's configuration on the GPU: seconds per iteration with every loss term on, and its formats
PAPER="${PAPER:-$([ "$DEVICE" = cpu ] && echo 0 || echo 1)}"
if [ "$PAPER" = 1 ]; then
  PAPER_PRESET="${PAPER_PRESET:-voc}"
  PAPER_SIZE="${PAPER_SIZE:-448}"
  run "synthetic data for the paper's configuration ($PAPER_SIZE px)" "${SECO[@]}" data synth "$WORK/data_paper" \
    --images 64 --size "$PAPER_SIZE" --seed 0
  # the phases compressed into 60 iterations: contrast from 10, decoder from 20, so the last 40 run every term
  run "train the $PAPER_PRESET preset 60 iterations on $DEVICE with --amp $AMP" "${SECO[@]}" train \
    --data "$WORK/data_paper" --preset "$PAPER_PRESET" --out "$WORK/run_paper" --device "$DEVICE" --amp "$AMP" \
    --iters 60 --set train.warmup_iters=5 --set train.contrast_start=10 --set train.seg_start=20 \
    --set train.update_prototype=5 --set train.log_every=10
  if [ -f "$WORK/run_paper/metrics.jsonl" ]; then
    "$PY" - "$WORK/run_paper/metrics.jsonl" <<'EOF'
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    r = json.loads(line)
    if r.get("kind") == "train":
        print(f"iteration {r['iteration']}: {r['sec_per_iter']:.3f} s/iteration, peak memory {r['peak_mem_mb']} MB "
              f"({r.get('mem_kind', '')})")
EOF
  fi
  if [ -f "$WORK/run_paper/last.pt" ]; then
    run "seco benchmark, the paper's configuration" "${SECO[@]}" benchmark --model "$WORK/run_paper/last.pt" \
      --data "$WORK/data_paper" --images 16 --repeats 1 --latency-images 8 --device "$DEVICE" \
      --formats torch,torch-bf16,onnx,onnx-fp16,trt-fp16 --out "$WORK/benchmark_paper" --timeout 150
    [ -f "$WORK/benchmark_paper/benchmark.md" ] && cat "$WORK/benchmark_paper/benchmark.md"
  fi
fi

say "done in $(( $(date +%s) - START )) s; work folder $WORK"
if [ "${#FAILED[@]}" -gt 0 ]; then
  printf 'FAILED steps:\n'; printf '  %s\n' "${FAILED[@]}"
  exit 1
fi
echo "all steps passed"
