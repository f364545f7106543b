#!/usr/bin/env bash
# Several rails-train multiruns at once on one GPU machine, started in the background so they can outlive one
# remote command, then collected (per finished run: metrics.json, run.json, .hydra/*.yaml, the job log, the
# per-epoch CSV metrics as epochs.csv).
#
#   bash scripts/gpu_sweep.sh start NAME [rails-train multirun overrides...]  # setsid + nohup, returns at once
#   bash scripts/gpu_sweep.sh wait SECONDS        # wait until every started sweep ended (or SECONDS passed),
#                                                 # then collect and print the results table
#   bash scripts/gpu_sweep.sh collect             # collect what has finished so far
#
# Everything comes back as at most four archives (the device returns at most 8 files): runs.tar.gz (finished runs),
# partial.tar.gz (every job's epochs so far), sweep_logs.tar.gz, ckpts.tar.gz (COLLECT_CKPT=1).
# Environment: WHEELS (default .whl: hydra-core, omegaconf, antlr4, hydra-joblib-launcher wheels for a machine
# without them), RAILS_SRC (default: .snap/src when present, else src), SWEEPS (default /tmp/rails-sweeps),
# OUT (where collected files go), COLLECT_CKPT (1: also the best checkpoint of each run, into $OUT/ckpts.tar.gz;
# COLLECT_CKPT_GLOB, e.g. 'r7_mol/0*', only of the runs SWEEP/JOB it matches: ~4 MB each, without the training
# state), MPS (1: start NVIDIA's Multi-Process Service first so the jobs' kernels share the GPU concurrently).
# Each NAME is one `python3 -m rails.train -m ...` with hydra.sweep.dir=$SWEEPS/NAME; use hydra/launcher=parallel
# hydra.launcher.n_jobs=K to run K jobs at once.
set -uo pipefail
cd "$(dirname "$0")/.."
SWEEPS=${SWEEPS:-/tmp/rails-sweeps}
OUT=${OUT:-$SWEEPS/out}
WHEELS=${WHEELS:-.whl}
if [ -z "${RAILS_SRC:-}" ]; then
  if [ -d .snap/src ]; then RAILS_SRC=$PWD/.snap/src; else RAILS_SRC=$PWD/src; fi
fi
mkdir -p "$SWEEPS" "$OUT"

# shellcheck source=device_site.sh
source scripts/device_site.sh
setup() {
  install_site "$WHEELS"
  export PYTHONPATH=/tmp/site:$RAILS_SRC
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONUNBUFFERED=1
}

# MPS=1: run the jobs' kernels concurrently through NVIDIA's Multi-Process Service (one control daemon for the
# machine, started once, default pipe directory). Without it, processes sharing a GPU take turns on it, and
# many small launch-bound trainings leave most SMs idle. No daemon binary: a warning, and the jobs run without.
mps() {
  [ "${MPS:-0}" = 1 ] || return 0
  if ! command -v nvidia-cuda-mps-control >/dev/null; then
    echo "MPS=1 but nvidia-cuda-mps-control is not installed: running without MPS" >&2
    return 0
  fi
  # -f: the process name (comm) is cut to 15 characters, so `pgrep -x nvidia-cuda-mps-control` never matched and
  # every later sweep tried a second daemon ("already running") and said, wrongly, that it ran without MPS.
  if pgrep -f nvidia-cuda-mps-control >/dev/null; then
    echo "MPS control daemon already running: the jobs share it"
  else
    mkdir -p /tmp/nvidia-mps-log
    # The daemon serves every GPU: it must not inherit the CUDA_VISIBLE_DEVICES of the sweep that starts it.
    if ! env -u CUDA_VISIBLE_DEVICES CUDA_MPS_LOG_DIRECTORY=/tmp/nvidia-mps-log nvidia-cuda-mps-control -d; then
      echo "MPS control daemon failed to start: running without MPS" >&2
      return 0
    fi
    # A CUDA client must work through it (every GPU), else the daemon goes and the jobs run without MPS.
    if timeout 120 env -u CUDA_VISIBLE_DEVICES python3 -c 'import torch
for d in range(torch.cuda.device_count()):
    torch.ones(1, device=f"cuda:{d}").add_(1).item()' >/tmp/nvidia-mps-log/probe.txt 2>&1; then
      echo "MPS control daemon started and a CUDA client ran through it (log /tmp/nvidia-mps-log)"
    else
      echo "a CUDA client failed under MPS ($(tail -n 1 /tmp/nvidia-mps-log/probe.txt)): MPS stopped" >&2
      echo quit | nvidia-cuda-mps-control
    fi
  fi
}

start() {
  local name=$1; shift
  setup
  mps
  setsid nohup python3 -m rails.train -m "hydra.sweep.dir=$SWEEPS/$name" "$@" >"$SWEEPS/$name.out" 2>&1 &
  echo $! >"$SWEEPS/$name.pid"
  echo "started $name (pid $(cat "$SWEEPS/$name.pid")): $*"
}

running() {
  local pidfile n=0
  for pidfile in "$SWEEPS"/*.pid; do
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && n=$((n + 1))
  done
  echo $n
}

collect() {
  setup
  local metrics run dest
  for metrics in "$SWEEPS"/*/*/metrics.json; do
    [ -f "$metrics" ] || continue
    run=$(dirname "$metrics")
    dest=$OUT/runs/${run#"$SWEEPS"/}
    mkdir -p "$dest/.hydra"
    cp "$run"/metrics.json "$dest/"
    cp "$run"/run.json "$dest/" 2>/dev/null
    cp "$run"/.hydra/config.yaml "$run"/.hydra/overrides.yaml "$dest/.hydra/"
    cp "$run"/*.log "$dest/" 2>/dev/null
    # The per-epoch trajectory (CSVLogger), to see where a run peaked and whether it was still improving.
    for csv in "$run"/csv/version_*/metrics.csv; do [ -f "$csv" ] && cp "$csv" "$dest/epochs.csv"; done
    # With COLLECT_CKPT=1 the best checkpoint (named in the job log) goes to $OUT/ckpts/<sweep>/<job>.ckpt, outside
    # runs/ (results/runs/ holds no weights), without its training state (scripts/strip_checkpoint.py: ~4 MB for
    # an ML-1M HSTU-large + MoL run instead of ~12); e.g. for the trained-model rows of scripts/bench_topk.py.
    # shellcheck disable=SC2053  # COLLECT_CKPT_GLOB is a pattern on purpose
    if [ "${COLLECT_CKPT:-0}" = 1 ] && [[ ${run#"$SWEEPS"/} == ${COLLECT_CKPT_GLOB:-*} ]]; then
      best=$(logged_checkpoint "$run"/*.log)
      if [ -n "$best" ] && [ -f "$best" ]; then
        mkdir -p "$OUT/ckpts/$(dirname "${run#"$SWEEPS"/}")"
        python3 scripts/strip_checkpoint.py "$best" "$OUT/ckpts/${run#"$SWEEPS"/}.ckpt" >/dev/null ||
          echo "checkpoint of $run not collected (scripts/strip_checkpoint.py failed)" >&2
      fi
    fi
  done
  for run in "$SWEEPS"/*/*/; do  # failed jobs: keep their error for the report
    [ -f "$run/error.txt" ] && mkdir -p "$OUT/failed/${run#"$SWEEPS"/}" && cp "$run/error.txt" "$OUT/failed/${run#"$SWEEPS"/}"
  done
  # The sweeps' own logs as one archive: the device returns at most 8 files, and one file per sweep crowded out
  # runs.tar.gz once.
  (cd "$SWEEPS" && ls ./*.out >/dev/null 2>&1 && tar -czf "$OUT/sweep_logs.tar.gz" ./*.out)
  # Every job's per-epoch curve so far, finished or not (a job stopped early still shows where it was heading).
  (cd "$SWEEPS" && ls -d ./*/*/csv >/dev/null 2>&1 &&
    tar -czf "$OUT/partial.tar.gz" $(ls -d ./*/*/csv ./*/*/.hydra/overrides.yaml 2>/dev/null))
  # One archive: the device tool returns only shallow folders.
  # Checkpoints in an archive of their own: the device returns files of at most 16 MiB, and a large ckpts.tar.gz
  # must not cost the results.
  tar -czf "$OUT/runs.tar.gz" -C "$OUT" runs $( [ -d "$OUT/failed" ] && echo failed ) 2>/dev/null
  [ -d "$OUT/ckpts" ] && tar -czf "$OUT/ckpts.tar.gz" -C "$OUT" ckpts && rm -rf "$OUT/ckpts"
  python3 - "$OUT/runs" <<'PY'
import sys
from rails.results import collect_runs, summarize
rows = summarize(collect_runs([sys.argv[1]]))
print(f"{'dataset':14} {'model':11} {'head':4} {'protocol':9} {'n':>2} {'HR@10':>15} {'NDCG@10':>15}  variant")
for r in rows:
    m = r["metrics"]
    cell = lambda k: f"{m[k]['mean']:.4f}±{m[k]['std']:.4f}" if k in m else "-"
    print(f"{r['dataset'][:14]:14} {r['model'][:11]:11} {r['head'][:4]:4} {r['protocol'][:9]:9} "
          f"{len(r['seeds']):>2} {cell('test/hr@10'):>15} {cell('test/ndcg@10'):>15}  {r['variant']}")
PY
  rm -rf "$OUT/runs" "$OUT/failed"  # they travel inside runs.tar.gz; loose, they only count against the file limit
}

wait_all() {
  local deadline=$(( $(date +%s) + $1 ))
  while [ "$(running)" -gt 0 ] && [ "$(date +%s)" -lt "$deadline" ]; do
    sleep 20
    echo "$(date +%T) sweeps running: $(running); finished runs: $(ls "$SWEEPS"/*/*/metrics.json 2>/dev/null | wc -l);" \
      "epochs: $(for f in "$SWEEPS"/*/*/csv/*/metrics.csv; do [ -f "$f" ] && tail -n 1 "$f" | cut -d, -f1; done | tr '\n' ' ')"
  done
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null
  collect
  echo "sweeps still running: $(running)"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  wait) wait_all "${2:-540}" ;;
  collect) collect ;;
  *) sed -n 2,13p "$0"; exit 2 ;;
esac
