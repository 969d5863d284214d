#!/usr/bin/env bash
# surgflow GPU suite: one call, under 8 minutes, on one GPU (H100/H200 class).
# ConvNeXt-T at 384x216: the paper's training loop (fp32, 1x64, no compile) vs surgflow's settings
# (bf16, channels_last, larger B, compile, full_context up to one 6,000-frame video), the data path
# against synthetic tensors, the projected Cholec80 schedule, longest T per strategy, peak memory.
# Needs no network (pretrained=False); the data-path rows synthesize and prepare a small dataset
# (PyAV). benchmarks/device_check.sh runs it after the `gpu` tests, with --json and --profile.
#   bash benchmarks/gpu_suite.sh [extra gpu_suite.py flags, e.g. --no-compile --json FILE]
#   bash benchmarks/gpu_suite.sh --dry-run     # the same script on the CPU, tiny sizes, < 1 minute
# Environment: PYTHON (default: .venv/bin/python if present, else python3), GPU_SUITE_BUDGET
# (seconds for the Python side, default 420; the hard limit adds 50 s for start-up).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 SURGFLOW_NO_PROGRESS=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
for arg in "$@"; do
  if [ "$arg" = "--dry-run" ]; then  # CPU, tiny backbone and sizes: the flags come from --dry-run
    exec timeout 150 "$PY" benchmarks/gpu_suite.py "$@"
  fi
done
BUDGET=${GPU_SUITE_BUDGET:-420}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout $((BUDGET + 50)) "$PY" benchmarks/gpu_suite.py --device cuda --backbone convnext_tiny \
  --size 384x216 --budget "$BUDGET" "$@"
