#!/usr/bin/env bash
# Fill the ignored folder .whl/ with the wheels that the lent GPU machine's python lacks, so that
# one device call can carry them (64 MiB at most with the working tree) and
# benchmarks/device_check.sh installs them there into /tmp/site (pip --no-index --no-deps).
# That machine has no network; its python3 is CPython 3.12 with torch 2.11, torchvision, timm,
# numpy, matplotlib, tensorboard, pyyaml, tqdm, markdown, pytest, onnx and onnxruntime, but no
# PyAV (surgflow's video decoding: synth, prepare, predict).
#   bash benchmarks/fetch_device_wheels.sh                 # PyAV, the version installed here
#   bash benchmarks/fetch_device_wheels.sh av==17.0.0      # other or more packages (no deps fetched)
# Environment: PYTHON (default python3), DEVICE_PYTHON_VERSION (default 3.12).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PYVER=${DEVICE_PYTHON_VERSION:-3.12}
DEST=.whl
if [ "$#" -gt 0 ]; then
  PACKAGES=("$@")
else  # the PyAV the tests ran with here, else the newest
  AV=$("$PY" -c "from importlib.metadata import version; print(version('av'))" 2>/dev/null || true)
  PACKAGES=("av${AV:+==$AV}")
fi
if ! git check-ignore -q "$DEST/x.whl"; then
  echo "fetch_device_wheels.sh: $DEST/ is not ignored by git (.gitignore lists /.whl/)" >&2
  exit 2
fi
mkdir -p "$DEST"
# manylinux tags differ per package; pip matches each tag exactly, so name the usual ones
PLATFORMS=()
for tag in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
           manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64; do
  PLATFORMS+=(--platform "$tag")
done
"$PY" -m pip download --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  "${PLATFORMS[@]}" -d "$DEST" "${PACKAGES[@]}"
# one version of each package: two would stop the whole install on the device
dupes=$(ls "$DEST"/*.whl | xargs -n1 basename | cut -d- -f1 | sort | uniq -d)
if [ -n "$dupes" ]; then
  echo "fetch_device_wheels.sh: more than one wheel of: $dupes; delete the extra ones in $DEST/" >&2
  exit 1
fi
total=$(du -cm "$DEST"/*.whl | tail -1 | cut -f1)
ls -la "$DEST"
echo "$DEST: ${total} MiB of wheels (the device call carries at most 64 MiB with the working tree)"
if [ "$total" -gt 60 ]; then
  echo "fetch_device_wheels.sh: too large to carry; fetch fewer packages" >&2
  exit 1
fi
