#!/usr/bin/env bash
# Download the pure-Python wheels that the GPU machine (no internet) lacks into .whl/ (git-ignored):
# Hydra and OmegaConf (tests/conftest.py, rails-train), their parser runtime and the parallel launcher.
# The machine already has torch, lightning, triton, transformers, pandas, pyarrow, pyyaml and joblib.
# Run here, from anywhere in the repo:  scripts/gpu_wheels.sh   (WHEEL_DIR=<dir> to put them elsewhere)
# There: scripts/device_gpu_tests.sh installs them into /tmp/site (docs/operations.md, "GPU test suite").
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${WHEEL_DIR:-.whl}
PY=${PY:-python3}
# The versions CI runs (.venv); keep one version of each package in $DEST, two stop the install there.
WHEELS=(hydra-core==1.3.8 omegaconf==2.3.1 hydra-joblib-launcher==1.2.0)
SDISTS=(antlr4-python3-runtime==4.9.3)  # published as a source archive only: built into a wheel here

mkdir -p "$DEST"
for spec in "${WHEELS[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d "$DEST" "$spec"
done
for spec in "${SDISTS[@]}"; do
  "$PY" -m pip wheel -q --no-deps "$spec" -w "$DEST"
done

# One wheel per distribution name (pip normalises - and _ and case).
dupes=$(for f in "$DEST"/*.whl; do basename "$f" | cut -d- -f1 | tr '[:upper:]-' '[:lower:]_'; done |
  sort | uniq -d)
if [ -n "$dupes" ]; then
  echo "error: several versions in $DEST of: $dupes (remove all but one)" >&2
  exit 1
fi
du -ch "$DEST"/*.whl
