# Sourced by the one-GPU round scripts (round12.sh, round14.sh): the steps they share. The sourcing script sets
# ROUND (the sweep prefix, e.g. r14), optionally EPOCHS (default 101), defines `trainings` (its `screen` calls)
# and ends with `round_main "$@"`; a step of its own goes before that call.
#
#   bench   : alone on the machine: bench_mol_step (dot / MoL / fused MoL / bf16 MoL head / compiled MoL head /
#             MoL + the dot head's loss,
#             each eager and replayed from one CUDA graph; $OUT/bench_mol.*, <= 9 min).
#   start   : the round's trainings, detached on the last GPU (with two GPUs, GPU 0 meanwhile runs `profile`, or,
#             when the round sets TOPK_BESIDE='<sweep> ...', the top-k benchmark with those sweeps' checkpoints last).
#   profile : the fused top-k's GPU tests and scripts/profile_fused_exact.py at 1M and 10M items (B = 32, 8x4x64;
#             + the merged-tiles-per-sort grid; <= 9 min, $OUT/profile_fused_exact_{1M,10M}.*). One GPU: after
#             the trainings.
#   topk    : after the trainings: scripts/bench_topk.py (the docs/bench_topk.md grid), detached; `wait` collects it.
#             Its arguments: sweep names of the round (their best checkpoints) or checkpoint files (a ckpts.tar.gz
#             of an earlier round unpacked into .devdata), the trained-model problems.
#   kernel-tests: the fused top-k kernels' GPU tests only (as gpu-tests, fewer; $OUT/gpu_tests.log).
#   gpu-tests: the GPU test suite (scripts/device_gpu_tests.sh, <= 9 min; $OUT/gpu_tests.log); correctness only,
#             so also beside the trainings, between `start` and `wait`.
#   cosine  : after the last `wait` (~2 min): every job of the round's MoL + dot-loss sweeps (names with "mol" and
#             "dl"), its best checkpoint ranked by MoL, by the cosine its dot loss trained and by both
#             (rails.models.similarity.mol_cosine.MoLWithCosine via rails-eval); $OUT/cosine_eval.json (here:
#             scripts/cosine_eval_report.py).
#   usage   : after `wait` (the checkpoints live on the device only): scripts/mol_pair_usage.py over job 0 of
#             each MoL sweep, $OUT/mol_pair_usage.{json,md} (~1 min). The `wait` that sees the last training end
#             runs it itself when the call has >= 45 s left (USAGE=0: not).
#   wait    : waits at most ${2:-560} s and brings back the finished runs (runs.tar.gz, partial.tar.gz,
#             sweep_logs.tar.gz); with a detached top-k benchmark, that first. Repeat until done.
#   go      : `start`, then `wait ${2:-520}` in the same device call: the machine goes back 30 s after a call, so a
#             reply that comes late between a separate `start` and `wait` loses every training (round 29's first
#             attempt lost its machine that way at epoch 31); the first call of a round should be `go`.
#
# ONLY='<regex>' bash scripts/ablations/<round>.sh start: only the screens whose name matches (e.g. a re-run).
# SMOKE=1 bash scripts/ablations/<round>.sh start: here, before spending device time, each training of the round
# runs a few CPU batches in the foreground (debug=limit, one epoch; PYTHON, default .venv/bin/python) and says
# whether it got through; logs in /tmp/rails-<round>-smoke/<name>.log.
set -uo pipefail
ROUND_SCRIPT=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${OUT:-/tmp/rails-$ROUND}
EPOCHS=${EPOCHS:-101}
mkdir -p "$OUT"
# shellcheck source=../device_site.sh
source scripts/device_site.sh
device_env
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True OMP_NUM_THREADS=1 MPS=${MPS:-1}

common=(data.root="$PWD/.devdata" ++callbacks.progress_bar=null trainer.enable_progress_bar=false)
GPUS=$(nvidia-smi -L 2>/dev/null | grep -c "^GPU")
TRAIN_GPU=$((GPUS > 1 ? 1 : 0))  # the trainings' GPU: the second when there are two, else the only one

screen() {  # screen NAME OVERRIDES...: one training per seed of $SEEDS (default 1; e.g. SEEDS=1,2,3), all at once on
  # $TRAIN_GPU, detached, $EPOCHS epochs
  local name=$1 smoke=/tmp/rails-$ROUND-smoke seeds=${SEEDS:-1}
  shift
  if [ -n "${ONLY:-}" ] && ! [[ $name =~ $ONLY ]]; then  # ONLY=<regex>: the round's screens whose name matches
    return
  fi
  if [ "${SMOKE:-0}" = 1 ]; then
    mkdir -p "$smoke"
    if "${PYTHON:-.venv/bin/python}" -m rails.train "$@" "${common[@]}" seed="${seeds%%,*}" trainer=cpu debug=limit \
      trainer.max_epochs=1 hydra.run.dir="$smoke/$name" >"$smoke/$name.log" 2>&1; then
      echo "smoke ok: $name"
    else
      echo "smoke FAILED: $name ($(grep -E "Error|error" "$smoke/$name.log" | tail -n 1))"
    fi
    return
  fi
  local jobs
  jobs=$(($(tr -cd , <<<"$seeds" | wc -c) + 1))
  CUDA_VISIBLE_DEVICES=$TRAIN_GPU bash scripts/gpu_sweep.sh start "${ROUND}_$name" hydra/launcher=parallel \
    hydra.launcher.n_jobs="$jobs" "$@" "${common[@]}" seed="$seeds" trainer.max_epochs="$EPOCHS"
}

profiles() {  # the fused top-k's GPU tests and the fused-exact stage profiles, on GPU 0
  # the GPU checks of the kernels changed since round 18: the fused top-k with merged tiles parked and sorted in
  # together (float64 reference at 16, 4 and 2 tiles per sort), the training-step benchmark (its MoL + dot-loss head)
  if [ "${PROFILE_TESTS:-1}" = 1 ]; then  # PROFILE_TESTS=0: the profiles only (their launches check agreement)
    CUDA_VISIBLE_DEVICES=0 timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_benchmarks.py \
      "tests/test_mol_topk_kernel.py::test_kernel_cuda_merge_tiles_match_float64" 2>&1 | tail -n 3
  fi
  local items name
  # + the merge study: the running top-k (no prune) with a sort per merged tile against 4 and 16 tiles per sort
  # (round 17's stage profile: the merge is 3.9 of 10.6 ms at 1M items, 11.4 of 69.5 at 10M; at 1M about half
  # the tiles of a split merge), at three tile shapes (8x8 with 4 warps was the fastest of round 17's grid; 4x32 and
  # 2x64 park at most 4 and 2 tiles). Faster -> that `merge_tiles` becomes fused_mol_topk's default.
  # (each profile rewrites its JSON / markdown after every launch: a timeout keeps what was measured)
  local limit
  # PROFILE_ITEMS='10000000': one corpus size; PROFILE_LIMIT: seconds per size; PROFILE_BLOCKS / PROFILE_MERGES /
  # PROFILE_MAXNREG / PROFILE_STEPS / PROFILE_CHUNKS: the grid's launch shapes, tiles per sort, registers per thread
  # (0: ptxas' choice), tiles per loop step and gating hidden units per step (0: all at once)
  for items in ${PROFILE_ITEMS:-1000000 10000000}; do
    limit=${PROFILE_LIMIT:-$((items > 1000000 ? 280 : 150))}
    # shellcheck disable=SC2086  # the grid lists are words
    CUDA_VISIBLE_DEVICES=0 timeout "$limit" python3 scripts/profile_fused_exact.py --items "$items" --setting 8x4x64 \
      --batch 32 --blocks ${PROFILE_BLOCKS:-8x8x4 4x32x8 2x64x8} --grid-search one-pass \
      --merge-tiles ${PROFILE_MERGES:-1 4 16} --maxnreg ${PROFILE_MAXNREG:-0} --step-tiles ${PROFILE_STEPS:-1} \
      --hidden-chunks ${PROFILE_CHUNKS:-0} \
      --out "$OUT/p$items" 2>&1 | grep -v "^USDT" | tail -n 32
  done
  for name in profile_fused_exact.json profile_fused_exact.md; do
    cp "$OUT/p1000000/$name" "$OUT/${name/exact/exact_1M}" 2>/dev/null
    cp "$OUT/p10000000/$name" "$OUT/${name/exact/exact_10M}" 2>/dev/null
  done
  rm -rf "$OUT/p1000000" "$OUT/p10000000"
}

alone() {  # before a timed step: no training on this GPU, and no MPS daemon left by finished trainings
  # (round 14's bench ran through the daemon its trainings had started: the eager steps' launches went through it)
  if pgrep -f "rails.train" >/dev/null; then
    if [ "$GPUS" -le 1 ]; then
      echo "trainings are still running on the only GPU: '$1' would time them too; \`wait\` first" >&2
      exit 2
    fi
    return  # two GPUs: the trainings are on GPU 1, the timing on GPU 0 (they keep their daemon)
  fi
  if pgrep -f nvidia-cuda-mps-control >/dev/null; then
    echo quit | nvidia-cuda-mps-control && echo "stopped the MPS daemon of the finished trainings"
  fi
}

pair_usage() {  # which pairs the trained MoL heads' gating uses (scripts/mol_pair_usage.py, the device's CPU):
  # job 0 of every MoL sweep of the round (best_checkpoint of device_site.sh); $OUT/mol_pair_usage.{json,md}
  local ckpts=() labels=() sweep best
  for sweep in "$SWEEPS"/"$ROUND"_*mol*/; do
    sweep=$(basename "$sweep")
    best=$(best_checkpoint "$sweep")
    if [ -n "$best" ] && [ -f "$best" ]; then
      ckpts+=("$best")
      labels+=("$sweep")
    fi
  done
  if [ "${#ckpts[@]}" = 0 ]; then
    echo "no finished MoL run of $ROUND with a best checkpoint: run \`wait\` until the sweeps are done" >&2
    return 2
  fi
  CUDA_VISIBLE_DEVICES= timeout "${1:-500}" python3 scripts/mol_pair_usage.py --checkpoint "${ckpts[@]}" \
    --label "${labels[@]}" --data-root "$PWD/.devdata" --out "$OUT" 2>&1 | tail -n 40 | cut -c1-200
}

cosine_eval() {  # after the trainings: every job of each MoL + dot-loss sweep, its best checkpoint ranked by MoL, by
  # the cosine its dot loss trained and by both (rails.models.similarity.mol_cosine.MoLWithCosine, rails-eval, val
  # and test): does MoL rank better than that cosine? $OUT/cosine_eval.json: {"<sweep>/<job>": {"training run": its
  # own metrics, "mol": MoL through rails-eval, "cosine": ..., "mol+cosine": ...}}
  local job best blend name mol_weight cosine_weight dir pids=()
  # COSINE_SWEEPS: a glob of the sweeps to score (default: the round's MoL + dot-loss sweeps, names with "mol" and
  # "dl"; a round whose MoL sweeps train the dot loss through a preset, e.g. model/mol_recipe=joint, names them)
  # shellcheck disable=SC2086  # the glob is expanded on purpose
  for job in "$SWEEPS"/${COSINE_SWEEPS:-"$ROUND"_*mol*dl*}/*/; do
    job=${job%/}
    best=$(logged_checkpoint "$job"/*.log)
    [ -n "$best" ] && [ -f "$best" ] || continue
    # BLENDS: name:mol_weight:cosine_weight words (default: MoL, the cosine, their sum; a round may add weights)
    for blend in ${BLENDS:-mol:1.0:0.0 cosine:0.0:1.0 mol+cosine:1.0:1.0}; do
      IFS=: read -r name mol_weight cosine_weight <<<"$blend"
      dir=/tmp/rails-cosine/${job#"$SWEEPS"/}/$name
      mkdir -p "$(dirname "$dir")"
      timeout 300 python3 -m rails.eval ckpt_path="$best" hydra.run.dir="$dir" \
        +model_overrides.similarity._target_=rails.models.similarity.mol_cosine.MoLWithCosine \
        +model_overrides.similarity.mol_weight="$mol_weight" \
        +model_overrides.similarity.cosine_weight="$cosine_weight" >"$dir.log" 2>&1 &
      pids+=($!)
      if [ ${#pids[@]} -ge 12 ]; then wait "${pids[@]}"; pids=(); fi  # at most 12 evaluations at once
    done
  done
  [ -d /tmp/rails-cosine ] || { echo "no finished MoL + dot-loss run with a best checkpoint" >&2; return 2; }
  [ ${#pids[@]} -eq 0 ] || wait "${pids[@]}"
  python3 - "$SWEEPS" /tmp/rails-cosine "$OUT/cosine_eval.json" <<'PY'
import json, sys
from pathlib import Path
sweeps, evals, out = map(Path, sys.argv[1:])
read = lambda path: json.loads(path.read_text()) if path.is_file() else None
table = {}
for job in sorted(p for p in evals.glob("*/*") if p.is_dir()):
    key = f"{job.parent.name}/{job.name}"
    table[key] = {"training run": read(sweeps / key / "metrics.json"),
                  **{blend.name: read(blend / "metrics.json") for blend in sorted(job.iterdir()) if blend.is_dir()}}
out.write_text(json.dumps(table, indent=1) + "\n")
for name, rows in table.items():
    for scorer, m in rows.items():
        get = lambda key: m.get(key, float("nan"))
        cell = "failed" if not m else f"{get('test/hr@10'):.4f} / {get('test/ndcg@10'):.4f}"
        print(f"{name[:48]:48} {scorer:12} test HR@10 / NDCG@10 {cell}")
PY
}

round_main() {  # the shared steps; anything else prints the sourcing script's header
  case "${1:-}" in
    bench)  # alone on the machine: the training step without its host synchronisation (issue #13 item 4)
      # (+ the MoL head under bf16 autocast, and the whole sampled head call under one torch.compile: the probe of
      # how much of the launch-bound MoL step fusion removes)
      # `captured`: each step replayed from one CUDA graph, the step without launch overhead (what graph capture
      # of the training loop could reach; rows of a head that cannot be captured say why)
      alone bench
      CUDA_VISIBLE_DEVICES=0 timeout 540 python3 scripts/bench_mol_step.py \
        --heads dot mol mol_fused mol_bf16_head mol_compiled_head mol_dot_loss --precisions fp32 \
        --variants eager captured --profile-kernels --output "$OUT/bench_mol.md" 2>&1 |
        grep -E "ms \(|FAILED|Acceptance|backward at" | tail -n 14
      ;;
    gpu-tests)  # the whole GPU suite (pytest -m gpu, scripts/device_gpu_tests.sh; correctness only, so it may run
      # beside the round's trainings: slower then, hence the longer per-test timeout); log in $OUT/gpu_tests.log
      OUT=$OUT timeout 560 bash scripts/device_gpu_tests.sh --timeout 400 2>&1 | grep -E "passed|failed|FAILED|Error" |
        tail -n 12
      ;;
    kernel-tests)  # the fused top-k kernels' GPU tests only (float64 references; correctness, so also beside the
      # trainings): pytest -m gpu over tests/test_mol_topk_kernel.py and tests/test_mol_topk_two_pass.py, <= 9 min
      OUT=$OUT timeout 560 bash scripts/device_gpu_tests.sh --timeout 400 tests/test_mol_topk_kernel.py \
        tests/test_mol_topk_two_pass.py 2>&1 | grep -E "passed|failed|FAILED|Error" | tail -n 12
      ;;
    usage)  # after `wait`: which pairs each MoL run's gating uses (~1 min on the device's CPU)
      pair_usage
      ;;
    cosine)  # after the last `wait` (~2 min): each MoL + dot-loss run ranked by MoL, its cosine and both
      cosine_eval
      ;;
    start)
      echo "$GPUS GPU(s); trainings on GPU $TRAIN_GPU"
      trainings
      [ "${SMOKE:-0}" = 1 ] && exit 0
      if [ "$GPUS" -gt 1 ] && [ -n "${TOPK_BESIDE:-}" ]; then  # GPU 0 meanwhile: the top-k benchmark, the round's
        # TOPK_BESIDE sweeps' checkpoints as its last problems (`wait` brings bench_topk.* back, then the runs)
        alone topk
        # shellcheck disable=SC2086  # TOPK_BESIDE: sweep names separated by spaces
        start_topk_bench_beside $TOPK_BESIDE
      elif [ "$GPUS" -gt 1 ]; then  # else the kernel tests and profiles
        profiles
      fi
      sleep 20
      nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
      ;;
    topk)  # one GPU, once the trainings are done: the full top-k benchmark, detached (~12 min; `wait 560` collects
      # bench_topk.{json,md,png}); SWEEP names (e.g. r18_beauty_hstu_large_mol_residual_8x4x64_gd) add their best
      # checkpoints as the trained-model problems, and so do checkpoint files (a round's ckpts.tar.gz unpacked
      # into .devdata here and carried: `topk .devdata/ckpts/r22_*/0.ckpt`)
      alone topk
      shift
      if [ $# -gt 0 ] && [ -f "$1" ]; then
        start_topk_bench --data structured checkpoint --checkpoint "$@" --checkpoint-data-root "$PWD/.devdata"
      elif [ $# -gt 0 ]; then
        start_topk_bench_after "$@"
      else
        start_topk_bench --data structured
      fi
      ;;
    profile)  # one GPU, once the trainings are done (nothing else on the GPU while it is timed)
      alone profile
      profiles
      ;;
    go)  # start and the first wait in one call (the start log in /tmp/rails-$ROUND-start.log, its last lines printed)
      round_main start >"/tmp/rails-$ROUND-start.log" 2>&1
      tail -n 3 "/tmp/rails-$ROUND-start.log"
      round_main wait "${2:-520}"
      ;;
    wait)  # + the pair usage once the last training is done, if the call has a minute left (the checkpoints
      # live on the device only: one call less between them and the machine's release)
      if [ -f "$TOPK/pid" ]; then wait_topk_and_sweeps "${2:-560}"; else bash scripts/gpu_sweep.sh wait "${2:-560}"; fi
      local left=$((590 - SECONDS))
      if ! pgrep -f "rails.train" >/dev/null && [ "$left" -ge 45 ] && [ "${USAGE:-1}" = 1 ]; then
        pair_usage "$left" || echo "pair usage failed: run \`usage\` in the next call"
      fi
      ;;
    *)
      sed -n '2,/^ROUND=/p' "$ROUND_SCRIPT" | sed '$d'
      exit 2
      ;;
  esac
}
