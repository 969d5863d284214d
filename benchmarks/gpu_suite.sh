#!/usr/bin/env bash
# surgflow GPU suite: one call, under 8 minutes, on one GPU (H100/H200 class).
# ConvNeXt-T at 384x216: the paper's training loop (fp32, 1x64, no compile) vs surgflow's settings
# (bf16, channels_last, larger B, full_context): frames/s, peak memory, longest T per strategy.
# Needs no network (pretrained=False) and no prepared dataset (synthetic tensors).
#   bash benchmarks/gpu_suite.sh [extra gpu_suite.py flags, e.g. --compile]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 SURGFLOW_NO_PROGRESS=1 PYTHONUNBUFFERED=1
PY=python
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# the Python side keeps its own budget (420 s); the hard limit leaves room for start-up
timeout 470 "$PY" benchmarks/gpu_suite.py --device cuda --backbone convnext_tiny --size 384x216 \
  --budget 420 "$@"
