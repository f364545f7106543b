#!/usr/bin/env bash
# GPU round 10, one two-GPU machine (kind nvidia-h200-x2): diagnostics for issues #14 (DDP epoch scaling) and
# #13 (ClusteredTopK latency at 10M items), one call:
#
#   profile: (1) Lightning's SimpleProfiler over the weak-scaling DDP check's two trainings (HSTU-large, ML-1M,
#            128 sequences per GPU, 4 epochs; 1 GPU then 2 GPUs with trainer=ddp): where an epoch's time goes
#            besides its steps (round 8: 48 steps in 0.85 s on 1 GPU, 24 in 0.64 s on 2 = 1.33x, a fixed cost
#            per epoch of ~0.3 s). $OUT/prof/*.txt, $OUT/epoch_timer_*.json.
#            (2) scripts/profile_index.py on GPU 0: ClusteredTopK at 10M items, 8x4x64, B = 32, several
#            settings around round 8's best (.9947 recall in 5.43 ms replayed): latency eager / replayed,
#            recall and where it is lost, top kernels. $OUT/profile_index.{json,md}.
#
#   run(kind="nvidia-h200-x2", carry=[".whl", ".devdata"], command="bash scripts/ablations/x2_round10.sh profile")
#
# Here afterwards: cp <files_at>/profile_index.* results/profiles/ (and the prof/ reports) and read them.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/rails-round10}
mkdir -p "$OUT/prof"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export WANDB_MODE=disabled OMP_NUM_THREADS=4
# shellcheck source=../device_site.sh
source scripts/device_site.sh
install_site
export PYTHONPATH=/tmp/site:$PWD/src

ddp_profiles() {
  local runs=/tmp/rails-r10-runs common
  common=(experiment=ml_1m_seq_hstu_large_dot trainer.max_epochs=4 matmul_precision=highest
    data.root="$PWD/.devdata" trainer.enable_progress_bar=false ++callbacks.progress_bar=null
    ++callbacks.epoch_timer._target_=rails.callbacks.epoch_timer.EpochTimer
    +trainer.profiler._target_=lightning.pytorch.profilers.SimpleProfiler +trainer.profiler.dirpath="$OUT/prof")
  python3 -m rails.train "${common[@]}" trainer=gpu trainer.devices=1 data.batch_size=128 \
    +trainer.profiler.filename=gpu1 hydra.run.dir=$runs/gpu1 >"$OUT/gpu1.log" 2>&1
  echo "1 GPU rc $?"
  python3 -m rails.train "${common[@]}" trainer=ddp trainer.devices=2 data.batch_size=256 \
    +trainer.profiler.filename=gpu2 hydra.run.dir=$runs/gpu2 >"$OUT/gpu2.log" 2>&1
  echo "2 GPUs rc $?"
  for n in gpu1 gpu2; do
    for f in "$runs/$n"/epoch_timer/rank*.json; do
      cp "$f" "$OUT/epoch_timer_${n}_$(basename "$f")"
      python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], r['rank'], [round(s,3) for s in r['train_epoch_s']])" "$f" "$n"
    done
  done
  for f in "$OUT"/prof/fit-*; do
    echo "== $f"
    grep -E "run_training_epoch|run_training_batch|optimizer_step|backward|training_step|dataloader_next|on_train_epoch|on_train_batch|zero_grad" "$f" |
      awk -F'|' '{gsub(/ +/," ",$2); printf "%-70s %s %s %s\n", substr($2,1,70), $3, $4, $5}' | head -n 16
  done
}

case "${1:-}" in
  profile)
    ddp_profiles
    CUDA_VISIBLE_DEVICES=0 timeout 330 python3 scripts/profile_index.py --items 10000000 --setting 8x4x64 \
      --batch 32 --out "$OUT" --configs \
      num_lists=10000,shortlist=256,num_probes=32,num_candidates=8000 \
      num_lists=10000,shortlist=256,num_probes=32,num_candidates=8000,list_size_factor=1.25 \
      num_lists=10000,shortlist=256,num_probes=24,num_candidates=6000 \
      num_lists=10000,shortlist=128,num_probes=32,num_candidates=6000 \
      num_lists=20000,shortlist=512,num_probes=48,num_candidates=6000,list_size_factor=1.25 2>&1 |
      grep -v "^USDT" | tail -n 8
    ;;
  *)
    sed -n 2,16p "$0"
    exit 2
    ;;
esac
