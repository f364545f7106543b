# Sourced by the scripts that run on the GPU machine (gpu_sweep.sh, ablations/x2_round*.sh).
# install_site [WHEEL_DIR]: the wheels of WHEEL_DIR (default .whl: Hydra, OmegaConf, antlr4, the joblib launcher,
# from scripts/gpu_wheels.sh) installed into /tmp/site once per machine; nothing when there are none.
install_site() {
  local wheels=${1:-.whl}
  if [ ! -f /tmp/site/.done ] && ls "$wheels"/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$wheels"/*.whl && touch /tmp/site/.done
  fi
}

# device_env: what every GPU-round script needs before its first python3: NVLink multicast off (the device
# machines require it; children inherit it), unbuffered output, the wheels installed, rails on the path.
device_env() {
  export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
  install_site
  export PYTHONPATH=/tmp/site:$PWD/src
}

# The full top-k benchmark, detached on GPU 0 so that it outlives the device call (its $OUT is emptied before
# each call): start_topk_bench [more bench_topk.py arguments] starts it; start_topk_bench_after SWEEP... starts it
# once job 0 of each named sweep (scripts/gpu_sweep.sh, trained in the same round) has named its best checkpoint,
# with those checkpoints as the trained-model problems (a sweep that ended without one is left out, said in the
# log); wait_topk_bench DEADLINE (epoch seconds) waits for it until then and copies bench_topk.{json,md,png}
# (partial when still running) to $OUT. With two GPUs, start_topk_bench_beside SWEEP... starts it at once on GPU 0
# while the sweeps train on GPU 1, their checkpoints benchmarked last.
TOPK=/tmp/rails-topk
SWEEPS=${SWEEPS:-/tmp/rails-sweeps}
topk_bench() {  # foreground: bench_topk.py with the rounds' arguments and "$@"
  python3 scripts/bench_topk.py --items 1000000 10000000 100000000 \
    --settings 8x4x64 8x8x32 --batch-sizes 1 32 256 --batch-sizes-at 100000000:32 --slow-max-items 10000000 \
    --truth-queries 64 --runs 10 --warmup 2 --time-budget-s 1.5 --no-faiss "$@" --out "$TOPK"
}
logged_checkpoint() {  # LOG...: the last best checkpoint rails-train wrote into these logs; else nothing
  grep -ho "best checkpoint: .*\.ckpt" "$@" 2>/dev/null | tail -n 1 | sed 's/^best checkpoint: //'
}
best_checkpoint() {  # SWEEP: the best checkpoint job 0 of the sweep logged, once it has ended; else nothing
  logged_checkpoint "$SWEEPS/$1"/0/*.log
}
link_best_checkpoint() {  # SWEEP LINK: once job 0 of SWEEP has ended naming its best checkpoint, LINK points at it
  local ckpt
  while [ -z "$(best_checkpoint "$1")" ] && kill -0 "$(cat "$SWEEPS/$1.pid" 2>/dev/null)" 2>/dev/null; do
    sleep 15
  done
  ckpt=$(best_checkpoint "$1")
  if [ -n "$ckpt" ] && [ -f "$ckpt" ]; then
    ln -sfn "$ckpt" "$2" && echo "$(date +%T) sweep $1: $ckpt"
  else
    echo "sweep $1 ended without a best checkpoint: its trained-model problem is left out"
  fi
}
topk_bench_after() {  # foreground: waits for the sweeps' checkpoints, then topk_bench with them
  local name links=()
  mkdir -p "$TOPK/trained"
  for name in "$@"; do
    link_best_checkpoint "$name" "$TOPK/trained/$name.ckpt"
    [ -e "$TOPK/trained/$name.ckpt" ] && links+=("$TOPK/trained/$name.ckpt")
  done
  echo "$(date +%T) starting bench_topk with checkpoints: ${links[*]:-none}"
  if [ ${#links[@]} -gt 0 ]; then
    topk_bench --data structured checkpoint --checkpoint "${links[@]}" --checkpoint-data-root "$PWD/.devdata"
  else
    topk_bench --data structured
  fi
}
topk_bench_beside() {  # foreground: topk_bench at once (two GPUs: the sweeps train on the other one); each sweep's
  # best checkpoint becomes a trained-model problem after the structured ones (bench_topk.py --checkpoint-wait-s
  # waits for its link; a sweep that ends without one ends the run there, its rows kept, marked partial)
  local name links=()
  mkdir -p "$TOPK/trained"
  for name in "$@"; do
    links+=("$TOPK/trained/$name.ckpt")
    link_best_checkpoint "$name" "$TOPK/trained/$name.ckpt" &
  done
  topk_bench --data structured checkpoint --checkpoint "${links[@]}" --checkpoint-wait-s 3000 \
    --checkpoint-data-root "$PWD/.devdata"
}
_detach_topk() {  # FUNCTION ARGS...: run a function of this file detached on GPU 0, pid in $TOPK/pid
  mkdir -p "$TOPK"
  CUDA_VISIBLE_DEVICES=0 setsid nohup bash -c 'source scripts/device_site.sh && "$@"' _ "$@" >"$TOPK/log.txt" 2>&1 &
  echo $! >"$TOPK/pid"
  echo "bench_topk ($1) started (pid $(cat "$TOPK/pid")), log $TOPK/log.txt"
}
start_topk_bench() { _detach_topk topk_bench "$@"; }
start_topk_bench_after() { _detach_topk topk_bench_after "$@"; }
start_topk_bench_beside() { _detach_topk topk_bench_beside "$@"; }
wait_topk_bench() {
  while kill -0 "$(cat "$TOPK/pid" 2>/dev/null)" 2>/dev/null && [ "$(date +%s)" -lt "$1" ]; do sleep 15; done
  tail -n 8 "$TOPK/log.txt"
  cp "$TOPK"/bench_topk.* "$OUT/" 2>/dev/null
}

# wait_topk_and_sweeps SECONDS: the detached top-k benchmark, then the started sweeps (scripts/gpu_sweep.sh wait,
# at least 20 s to collect them), within SECONDS in all. gpu_sweep.sh's environment (COLLECT_CKPT, ...) passes
# through: COLLECT_CKPT=1 wait_topk_and_sweeps 560.
wait_topk_and_sweeps() {
  local deadline left
  deadline=$(($(date +%s) + $1))
  wait_topk_bench "$deadline"
  left=$((deadline - $(date +%s)))
  bash scripts/gpu_sweep.sh wait $((left > 20 ? left : 20))
}
