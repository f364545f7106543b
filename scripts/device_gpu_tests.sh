#!/usr/bin/env bash
# The GPU test suite (pytest -m gpu) on a CUDA machine without internet, from the repo root:
#   here:  scripts/gpu_wheels.sh                       (Hydra, OmegaConf, antlr4, joblib launcher -> .whl/)
#   there: scripts/device_gpu_tests.sh                 (device tool: carry [".whl"], command as above)
# Installs the wheels of .whl/ into $SITE (default /tmp/site), puts them and src/ on PYTHONPATH (no pip
# install of rails: the machine's torch/triton/lightning stay as they are) and runs the gpu-marked tests
# with a per-test timeout; the log goes to $OUT/gpu_tests.log ($OUT defaults to /tmp/rails-gpu-tests).
# Exit status: pytest's.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/rails-gpu-tests}
SITE=${SITE:-/tmp/site}
mkdir -p "$OUT"
LOG="$OUT/gpu_tests.log"

if ! compgen -G ".whl/*.whl" >/dev/null; then
  echo "no wheels in .whl/: run scripts/gpu_wheels.sh where there is internet, carry .whl" | tee "$LOG" >&2
  exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl 2>&1 | tee "$LOG" ||
  exit 2
export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1

{
  echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC')  git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  python3 -c 'import sys, torch, triton, lightning, hydra
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "triton", triton.__version__, "lightning", lightning.__version__, "hydra", hydra.__version__)'
} 2>&1 | tee -a "$LOG"

start=$(date +%s)
python3 -m pytest -m gpu -q -x --timeout 170 --durations=20 -p no:cacheprovider "$@" 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}
echo "== pytest -m gpu: exit status $status, $(( $(date +%s) - start )) s wall" | tee -a "$LOG"
exit "$status"
