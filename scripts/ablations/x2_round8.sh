#!/usr/bin/env bash
# GPU round 8 on one two-GPU machine (kind nvidia-h200-x2), three device calls chained within 30 s:
#
#   ddp    : issue #14 item 6 on both GPUs: weak scaling (128 per GPU) first, then strong scaling at the
#            preset's global batch 128; 8 epochs per run (7 timed). $OUT/bench_ddp.json, ddp_stdout.txt. Then
#            it starts, detached, the full top-k benchmark (1M, 10M, 100M items) on GPU 0: it runs on through
#            the next two calls (~20 minutes; the 10-minute call limit cut the last one short).
#   bench  : GPU 1: bench_mol_step (eager / graphs x dot, MoL, MoL with the fused Triton mixture, MoL head in
#            bf16 autocast; fp32 step; each row's top kernels and device-busy time from torch.profiler: where
#            MoL's extra 15 ms per step go), then, detached on GPU 1, the next ML-1M MoL trainings and the GPU
#            suite beside them (its wall time is then not a clean measurement).
#   wait   : waits for both (at most ${2:-560} s), brings back $OUT/bench_topk.{json,md,png} (partial if cut) and
#            the runs (runs.tar.gz, partial.tar.gz, sweep_logs.tar.gz, ckpts.tar.gz with one MoL checkpoint).
#
#   run(kind="nvidia-h200-x2", carry=[".whl", ".devdata"], command="bash scripts/ablations/x2_round8.sh ddp")
#   run(command="bash scripts/ablations/x2_round8.sh bench")
#   run(command="bash scripts/ablations/x2_round8.sh wait 560")
#
# Here afterwards: cp <files_at>/bench_ddp.json docs/ && .venv/bin/python scripts/bench_ddp.py render --json
# docs/bench_ddp.json --markdown docs/benchmarks.md; cp bench_mol.*, bench_topk.* to docs/;
# gpu_tests.log to results/gpu_tests/; runs.tar.gz into results/runs/<date>-h200x2-round8/ and
# scripts/make_results.py. FAST_STEP=1 trains with the compiled step (measured at 8eff0c5: no faster than eager).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/rails-round8}
mkdir -p "$OUT"
# shellcheck source=../device_site.sh
source scripts/device_site.sh
device_env
FAST=()
MOL_FAST=()
if [ "${FAST_STEP:-0}" = 1 ]; then
  FAST=(model.compile_encoder=true model.optimizer.fused=true)
  MOL_FAST=(model.similarity.compile_mixing=true)
fi

start_trainings() {
  # Where round 7 points (docs/mol_investigation.md §0.3): item dropout 0.3 lifted MoL to 1.033x the dot product
  # and moved its best epoch from 54-74 to 89-99 of 101; more item-side regularisation, 3 seeds.
  export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True OMP_NUM_THREADS=1 MPS=${MPS:-1}
  local common=(data.root="$PWD/.devdata" ++callbacks.progress_bar=null trainer.enable_progress_bar=false "${FAST[@]}")
  CUDA_VISIBLE_DEVICES=1 bash scripts/gpu_sweep.sh start r8_mol_item_dropout_0.5 hydra/launcher=parallel \
    hydra.launcher.n_jobs=3 experiment=ml_1m_seq_hstu_large_mol model.similarity.item_dropout=0.5 seed=1,2,3 \
    "${common[@]}" "${MOL_FAST[@]}"
  # the third seed of the two data.holdout=2 rows (issue #12 deliverable 2: 3 seeds each)
  CUDA_VISIBLE_DEVICES=1 bash scripts/gpu_sweep.sh start r8_holdout2_dot_s3 hydra/launcher=parallel \
    hydra.launcher.n_jobs=1 experiment=ml_1m_seq_hstu_large_dot data.holdout=2 seed=3 "${common[@]}"
  CUDA_VISIBLE_DEVICES=1 bash scripts/gpu_sweep.sh start r8_holdout2_mol_s3 hydra/launcher=parallel \
    hydra.launcher.n_jobs=1 experiment=ml_1m_seq_hstu_large_mol data.holdout=2 seed=3 "${common[@]}" "${MOL_FAST[@]}"
}

case "${1:-}" in
  ddp)
    OUT=$OUT BUDGET_S=520 EPOCHS=8 PER_GPU_BATCHES=128 BATCHES=128 bash scripts/launch_ddp_check.sh "${FAST[@]}" \
      >"$OUT/ddp_stdout.txt" 2>&1
    echo "ddp rc $?"
    grep -E "^\| (weak|strong)|Acceptance" "$OUT/ddp_stdout.txt" | tail -n 4
    start_topk_bench  # GPU 0, detached
    ;;
  bench)
    CUDA_VISIBLE_DEVICES=1 timeout 360 python3 scripts/bench_mol_step.py --count-ops --profile-kernels \
      --heads dot mol mol_fused mol_bf16_head --precisions fp32 --variants eager graphs \
      --output "$OUT/bench_mol.md" 2>&1 | grep -v "^USDT" | tail -n 16
    start_trainings  # GPU 1, detached
    # the suite beside the trainings on GPU 1 (correctness; its wall time is not a clean measurement here)
    CUDA_VISIBLE_DEVICES=1 OUT=/tmp/rails-gpu-tests timeout 200 bash scripts/device_gpu_tests.sh \
      >/tmp/rails-gpu-tests.out 2>&1
    cp /tmp/rails-gpu-tests/gpu_tests.log "$OUT/" 2>/dev/null
    tail -n 6 "$OUT/gpu_tests.log"
    tail -n 3 "$TOPK/log.txt"
    ;;
  wait)
    deadline=$(($(date +%s) + ${2:-560}))
    wait_topk_bench "$deadline"
    left=$((deadline - $(date +%s)))
    COLLECT_CKPT=1 COLLECT_CKPT_GLOB='r8_mol_item_dropout_0.5/0' bash scripts/gpu_sweep.sh wait $((left > 20 ? left : 20))
    ;;
  *)
    sed -n 2,20p "$0"
    exit 2
    ;;
esac
