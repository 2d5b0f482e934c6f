#!/usr/bin/env bash
# GPU run for issue 6, a few minutes on one NVIDIA GPU (H100 class; CuPy + PyTorch, no internet):
#   1. the CuPy parity tests (tests/test_cupy_parity.py: logits, gradients, generation, fused kernels)
#   2. the GPU benchmarks (python -m bench.gpu: GPT-3 XL forward and generation in float16,
#      one 175B-wide layer, a GPT-2 124M training step; against PyTorch eager on the same card)
# and writes both to one report: $OUT/gpu-results.md if OUT is set, else bench/gpu-results.md.
#
#   bench/gpu.sh              # on the GPU machine
#   bench/gpu.sh --cpu-smoke  # check the script here: NumPy backend, tiny sizes (parity tests skip)
set -u
cd "$(dirname "$0")/.."
SMOKE=""
if [ "${1:-}" = "--cpu-smoke" ]; then SMOKE="--cpu-smoke"; fi
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # the engine and bench from this checkout, installed or not
DEST="${OUT:-bench}"
mkdir -p "$DEST"
REPORT="$DEST/gpu-results.md"
LIMIT="${GPU_BENCH_TIMEOUT:-420}"
{
  echo "# GPU run $(date -u '+%Y-%m-%d %H:%M UTC')${SMOKE:+ (CPU smoke: NumPy backend, tiny sizes)}"
  echo
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  echo
  echo "## CuPy parity tests"
  echo
  echo '```'
} > "$REPORT"
if "$PY" -c "import pytest" 2>/dev/null; then
  timeout 300 "$PY" -m pytest tests/test_cupy_parity.py -q -rs -p no:cacheprovider >> "$REPORT" 2>&1
else
  timeout 300 "$PY" tests/test_cupy_parity.py >> "$REPORT" 2>&1
fi
PARITY=$?
{ echo '```'; echo "exit status $PARITY"; echo; echo "## Benchmarks"; echo; } >> "$REPORT"
timeout "$LIMIT" "$PY" -m bench.gpu $SMOKE --repeats "${GPU_BENCH_REPEATS:-5}" --out "$DEST/gpu-bench.md" > "$DEST/gpu-bench.log" 2>&1
BENCH=$?
if [ -f "$DEST/gpu-bench.md" ]; then cat "$DEST/gpu-bench.md" >> "$REPORT"; fi
{ echo; echo "benchmark exit status $BENCH (log: gpu-bench.log)"; echo; echo '```'; tail -n 40 "$DEST/gpu-bench.log"; echo '```'; } >> "$REPORT"
cat "$REPORT"
[ "$PARITY" -eq 0 ] && [ "$BENCH" -eq 0 ]
