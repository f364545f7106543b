#!/usr/bin/env bash
# The 2-GPU acceptance check of issue #14 item 6 in one command on a GPU machine without internet:
# HSTU-large on the shared ML-1M copy (experiment=ml_1m_seq_hstu_large_dot), trained on 1 GPU and with
# trainer=ddp on $GPUS GPUs at each global batch of $BATCHES (same global batch both ways), the DDP run's best
# checkpoint evaluated by rails-eval on 1 GPU; scripts/bench_ddp.py writes $OUT/bench_ddp.json (after every
# batch size) and the DDP section of $OUT/benchmarks.md (a copy of docs/benchmarks.md).
#
#   here:  scripts/gpu_wheels.sh                 (Hydra, OmegaConf, antlr4 -> .whl/, once)
#   there: bash scripts/launch_ddp_check.sh      (device tool, kind nvidia-h200-x2,
#                                                 carry [".whl", ".devdata/ml-1m-seq", ".devdata/ml-1m-meta"])
#   here:  cp <fetched>/bench_ddp.json docs/ && python scripts/bench_ddp.py render \
#              --json docs/bench_ddp.json --markdown docs/benchmarks.md
#
# Environment: GPUS (2), EPOCHS (5: one warm-up + 4 timed), PER_GPU_BATCHES (512,128: weak-scaling points, measured
# first, the first is the headline: the same batch per GPU, N x the global batch on N GPUs), BATCHES ('': strong-scaling
# points, the same global batch on 1 and N GPUs, e.g. 128,512; at the preset's 128 a launch-bound step gains nothing), EXPERIMENT, TRAINER_ONE / TRAINER_MANY (gpu / ddp; cpu / ddp_sim for a CPU dry run),
# DATA_ROOT ($PWD/.devdata: ml-1m-seq/sequences.txt, ml-1m-meta/movies.dat), BUDGET_S (530: the run in progress
# then is killed, the batch sizes finished before are kept), OUT (/tmp/rails-ddp-check), RUNS, SITE (/tmp/site).
# Extra arguments are rails-train overrides for every training run.
set -uo pipefail
cd "$(dirname "$0")/.."
GPUS=${GPUS:-2}
EPOCHS=${EPOCHS:-5}
BATCHES=${BATCHES-}
PER_GPU_BATCHES=${PER_GPU_BATCHES-512,128}
EXPERIMENT=${EXPERIMENT:-ml_1m_seq_hstu_large_dot}
TRAINER_ONE=${TRAINER_ONE:-gpu}
TRAINER_MANY=${TRAINER_MANY:-ddp}
DATA_ROOT=${DATA_ROOT:-$PWD/.devdata}
BUDGET_S=${BUDGET_S:-530}
OUT=${OUT:-/tmp/rails-ddp-check}
SITE=${SITE:-/tmp/site}
RUNS=${RUNS:-/tmp/rails-ddp-runs/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

if compgen -G ".whl/*.whl" >/dev/null && [ ! -f "$SITE/.done" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl && touch "$SITE/.done"
fi
export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export WANDB_MODE=disabled PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
# NVLink multicast stays off (the device machines require it; children inherit the environment).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
cp docs/benchmarks.md "$OUT/benchmarks.md"

timeout $((BUDGET_S + 40)) python3 scripts/bench_ddp.py run --max-seconds "$BUDGET_S" --experiment "$EXPERIMENT" \
  --gpus "$GPUS" --trainer-one "$TRAINER_ONE" --trainer-many "$TRAINER_MANY" --epochs "$EPOCHS" --global-batches "$BATCHES" --per-gpu-batches "$PER_GPU_BATCHES" --out "$RUNS" --json "$OUT/bench_ddp.json" --markdown "$OUT/benchmarks.md" \
  --launched-by "GPUS=$GPUS EPOCHS=$EPOCHS PER_GPU_BATCHES=$PER_GPU_BATCHES BATCHES=$BATCHES bash scripts/launch_ddp_check.sh$(printf ' %q' "$@")" \
  -- "data.root=$DATA_ROOT" "$@" 2>&1 | tee "$OUT/bench_ddp.log"
status=${PIPESTATUS[0]}

# What the JSON was computed from (no checkpoints): logs, metrics, run records, per-rank epoch timers.
(cd "$RUNS" 2>/dev/null && tar -czf "$OUT/runs.tar.gz" --exclude='*.ckpt' . ) || true
if [ "$status" -ne 0 ] && [ -f "$OUT/bench_ddp.json" ]; then
  python3 scripts/bench_ddp.py render --json "$OUT/bench_ddp.json" --markdown "$OUT/benchmarks.md" >/dev/null
  echo "bench stopped early (exit $status): $OUT/bench_ddp.json holds the batch sizes that finished"
fi
exit "$status"
