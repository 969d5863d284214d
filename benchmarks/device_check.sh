#!/usr/bin/env bash
# Everything a lent GPU machine should measure for surgflow, in one call of at most 8 minutes of
# command time (issue 23):
#   1. nvidia-smi and the Python environment (torch, CUDA, PyAV)          -> nvidia-smi.txt, env.txt
#   2. the CUDA tests: pytest tests/test_gpu.py -m gpu                     -> gpu_tests.txt, .xml
#   3. the GPU suite with its data-path rows, the torch profile of one step -> gpu_suite.md, .json,
#                                                                             profile.txt
# then summary.txt (each step's exit status and seconds). Everything is written under $OUT (a new
# temporary folder when OUT is unset; its path is printed first and last).
#
#   bash benchmarks/device_check.sh             # on the GPU machine
#   bash benchmarks/device_check.sh --dry-run   # the same steps on the CPU in under a minute:
#                                               # the gpu tests skip, the suite runs tiny sizes
#                                               # (tests/test_device_check.py runs it in CI)
#
# The lent machine's python3 has torch but no PyAV: benchmarks/fetch_device_wheels.sh fills the
# ignored folder .whl/ here; name `.whl` in the device call's `carry`, and this script installs
# the wheels into /tmp/site (pip --no-index --no-deps --target) and puts it on PYTHONPATH.
# Environment: PYTHON (default python3), OUT, DEVICE_CHECK_LIMIT (seconds, default 470).
# Exit status: 0 when every step passed, 1 when a step failed, 3 when no CUDA device is visible.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "device_check.sh: unknown argument '$arg' (only --dry-run)" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/surgflow_device_check.XXXXXX")}
mkdir -p "$OUT"
LIMIT=${DEVICE_CHECK_LIMIT:-470}  # the issue's 8 minutes, less 10 s for the call around it
START=$SECONDS
left() { echo $((LIMIT - (SECONDS - START))); }
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 SURGFLOW_NO_PROGRESS=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
echo "device_check: writing to $OUT (dry run: $DRY, limit ${LIMIT} s)"
: > "$OUT/summary.txt"
FAILED=0
record() {  # step, exit status, seconds
  echo "$1: exit $2, $3 s" | tee -a "$OUT/summary.txt"
  if [ "$2" != 0 ]; then FAILED=1; fi
}

# ---- 0. wheels carried for what the machine's python lacks (PyAV) ----
PYTHONPATH_BASE=$REPO${PYTHONPATH:+:$PYTHONPATH}
if [ "$DRY" = 0 ] && compgen -G ".whl/*.whl" > /dev/null; then
  t0=$SECONDS
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl > "$OUT/wheels.txt" 2>&1
  record wheels $? $((SECONDS - t0))
  PYTHONPATH_BASE=/tmp/site:$PYTHONPATH_BASE
else
  echo "wheels: none installed ($([ "$DRY" = 1 ] && echo "dry run" || echo "no .whl/*.whl"))" \
    | tee -a "$OUT/summary.txt"
fi
export PYTHONPATH=$PYTHONPATH_BASE

# ---- 1. the machine ----
t0=$SECONDS
if command -v nvidia-smi > /dev/null; then
  nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 \
    | tee -a "$OUT/nvidia-smi.txt"
else
  echo "nvidia-smi: not found" | tee "$OUT/nvidia-smi.txt"
fi
timeout 60 "$PY" - > "$OUT/env.txt" 2>&1 <<'EOF'
import platform, sys
import torch
print("python", platform.python_version(), sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"{p.total_memory / 2**30:.1f} GiB", "bf16", torch.cuda.is_bf16_supported())
from importlib import metadata, util
for name in ("torchvision", "timm", "av", "numpy", "pytest", "surgflow"):
    spec = util.find_spec(name)  # located, not imported: this step stays fast
    if spec is None:  # reported, not fatal: the steps below say what it breaks
        print(name, "MISSING")
        continue
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        version = "(no metadata)"
    print(name, version, spec.origin)
EOF
env_rc=$?
cat "$OUT/env.txt"
if grep -q "^av MISSING" "$OUT/env.txt"; then
  echo "WARNING: PyAV is missing: the tests that synthesize video and the data-path rows will fail;" \
    "fill .whl/ with benchmarks/fetch_device_wheels.sh and carry it" | tee -a "$OUT/summary.txt"
fi
record env $env_rc $((SECONDS - t0))
if [ "$DRY" = 0 ] && ! grep -q "available True" "$OUT/env.txt"; then
  echo "device_check: no CUDA device visible to $PY; stopping (use --dry-run on a CPU machine)" \
    | tee -a "$OUT/summary.txt"
  exit 3
fi

# ---- 2. the CUDA tests (on the CPU they all skip: collected, imported, not run) ----
t0=$SECONDS
TESTS_LIMIT=180
[ "$DRY" = 1 ] && TESTS_LIMIT=60
timeout "$TESTS_LIMIT" "$PY" -m pytest tests/test_gpu.py -m gpu -v -rA -p no:cacheprovider \
  -p no:xdist --junitxml "$OUT/gpu_tests.xml" 2>&1 | tee "$OUT/gpu_tests.txt"
record gpu_tests "${PIPESTATUS[0]}" $((SECONDS - t0))

# ---- 3. the GPU suite: rows, data path, profile, compile, longest T ----
t0=$SECONDS
if [ "$DRY" = 1 ]; then
  SUITE_ARGS=(--dry-run)
else
  # what is left, less the suite's start-up and the hard limit's margin in gpu_suite.sh
  export GPU_SUITE_BUDGET=$(($(left) - 60))
  SUITE_ARGS=()
fi
PYTHON=$PY bash benchmarks/gpu_suite.sh "${SUITE_ARGS[@]}" --json "$OUT/gpu_suite.json" \
  --profile "$OUT/profile.txt" 2>&1 | tee "$OUT/gpu_suite.md"
record gpu_suite "${PIPESTATUS[0]}" $((SECONDS - t0))

echo "total: $((SECONDS - START)) s of ${LIMIT} s; results in $OUT" | tee -a "$OUT/summary.txt"
exit $FAILED
