#!/usr/bin/env bash
# GPU round 11, one two-GPU machine (kind nvidia-h200-x2), three device calls chained within 30 s:
#
#   start : bench_mol_step alone on the host first (dot / MoL / MoL with the fused mixture, whose backward is now the
#           faster of an autotuned persistent kernel and a `rows` kernel + two matmuls, timed and logged at the first
#           step; eager fp32, kernel profiles; ~2 minutes; $OUT/bench_mol.{json,md}); the Beauty sweeps start on GPU 1
#           (below); scripts/profile_fused_exact.py on GPU 0 (stage ablations of the fused exact kernel at 1M items,
#           B = 32: what to redesign for the 3x-floor target; $OUT/profile_fused_exact.*). Then GPU 0: the full top-k benchmark (issue #13 acceptance: one run; 1M / 10M / 100M items, 8x4x64 and
#           8x8x32, B 1 / 32 / 256, 100M at B 32; the Triton list scan of ClusteredTopK is new since round 8,
#           and each problem's memory is released before the next corpus, which round 8 ran out of), plus the
#           trained ML-1M MoL checkpoint of round 8 (.devdata/ckpts/, 3,952 items) as a `checkpoint` problem;
#           detached, ~15 minutes. GPU 1: the Beauty-to-convergence sweeps of round 9 (issue #12 deliverable 4,
#           12 trainings, 201 epochs, through MPS), detached.
#   wait  : (twice or more) waits at most ${2:-560} s, then brings back $OUT/bench_topk.{json,md,png} (partial if
#           still running) and the finished runs (runs.tar.gz, partial.tar.gz, sweep_logs.tar.gz, ckpts.tar.gz
#           with the Beauty SASRec + MoL checkpoint of seed 1, for the next benchmark's checkpoint rows).
#
#   here first: mkdir -p .devdata && tar -xzf <round 8 files>/ckpts.tar.gz -C .devdata   (or any MoL checkpoint
#               at .devdata/ckpts/r8_mol_item_dropout_0.5/0.ckpt; without it the checkpoint problem is left out)
#   run(kind="nvidia-h200-x2", carry=[".whl", ".devdata"], command="bash scripts/ablations/x2_round11.sh start")
#   run(command="bash scripts/ablations/x2_round11.sh wait 560")     (again until both are done)
#
# Here afterwards: cp profile_fused_exact.* results/profiles/<date>-h200x2-fused-exact.*; cp bench_mol.* docs/ (and results/bench_mol/<date>-h200x2-<commit>.*); cp bench_topk.* docs/ (and update the Top-k headline in docs/benchmarks.md); runs.tar.gz
# into results/runs/<date>-h200x2-round11/ (strip the r9_ prefix) and scripts/make_results.py; the Beauty rows
# into docs/mol_investigation.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/rails-round11}
mkdir -p "$OUT"
# shellcheck source=../device_site.sh
source scripts/device_site.sh
device_env
CKPT=.devdata/ckpts/r8_mol_item_dropout_0.5/0.ckpt

trained=()  # the trained-checkpoint problem, when its checkpoint is here
if [ -f "$CKPT" ]; then
  trained=(--data structured checkpoint --checkpoint "$CKPT" --checkpoint-data-root "$PWD/.devdata")
fi

case "${1:-}" in
  start)
    # first, alone on the host: the MoL training step with the autotuned fused-mixture backward (issue #13 item 4)
    CUDA_VISIBLE_DEVICES=1 timeout 200 python3 scripts/bench_mol_step.py --heads dot mol mol_fused --precisions fp32 \
      --variants eager --profile-kernels --output "$OUT/bench_mol.md" 2>&1 | grep -E "ms \(|Acceptance|backward at" | tail -n 5
    BEAUTY_GPU_A=1 BEAUTY_GPU_B=1 NO_WAIT=1 bash scripts/ablations/x2_round9.sh start
    # GPU 0 before the benchmark: where the fused exact kernel's time goes (stage ablations, registers, spills)
    CUDA_VISIBLE_DEVICES=0 timeout 240 python3 scripts/profile_fused_exact.py --items 1000000 --setting 8x4x64 \
      --batch 32 --out "$OUT" 2>&1 | grep -v "^USDT" | tail -n 7
    start_topk_bench "${trained[@]}"
    sleep 30
    tail -n 3 "$TOPK/log.txt"
    nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
    ;;
  wait)
    COLLECT_CKPT=1 COLLECT_CKPT_GLOB='r9_beauty_sasrec_mol/0' wait_topk_and_sweeps "${2:-560}"
    ;;
  *)
    sed -n 2,22p "$0"
    exit 2
    ;;
esac
