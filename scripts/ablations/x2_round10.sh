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
#   measure: the Triton list scan (GPU test, the 10M profile again), the DDP weak-scaling check at 128 and 512
#            sequences per GPU ($OUT/bench_ddp.json), bench_mol_step eager fp32 alone on the host ($OUT/bench_mol.*).
#
# Here afterwards: cp <files_at>/profile_index.* results/profiles/ (and the prof/ reports) and read them.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/rails-round10}
mkdir -p "$OUT/prof"
export WANDB_MODE=disabled OMP_NUM_THREADS=4
# shellcheck source=../device_site.sh
source scripts/device_site.sh
device_env

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
  measure)
    # the Triton list scan: GPU test, then the same 10M profile as above with it (GPU 0)
    CUDA_VISIBLE_DEVICES=0 timeout 90 python3 -m pytest -q -m gpu tests/test_list_scan.py 2>&1 | tail -n 2
    CUDA_VISIBLE_DEVICES=0 timeout 200 python3 scripts/profile_index.py --items 10000000 --setting 8x4x64 \
      --batch 32 --out "$OUT" --top 8 --configs \
      num_lists=10000,shortlist=256,num_probes=32,num_candidates=8000 \
      num_lists=10000,shortlist=256,num_probes=32,num_candidates=8000,list_size_factor=1.25 \
      num_lists=10000,shortlist=256,num_probes=40,num_candidates=8000,list_size_factor=1.25 \
      num_lists=20000,shortlist=512,num_probes=64,num_candidates=8000,list_size_factor=1.25 2>&1 |
      grep -v "^USDT" | tail -n 5
    # DDP weak scaling at 128 (headline, as round 8) and 512 sequences per GPU; no strong-scaling points
    OUT=$OUT BUDGET_S=200 EPOCHS=6 PER_GPU_BATCHES=128,512 BATCHES='' bash scripts/launch_ddp_check.sh \
      >"$OUT/ddp_stdout.txt" 2>&1
    grep -E "^\| (weak|strong)|Acceptance" "$OUT/ddp_stdout.txt" | tail -n 3
    # the training step without another benchmark beside it (round 8's shared the host), eager fp32
    CUDA_VISIBLE_DEVICES=1 timeout 150 python3 scripts/bench_mol_step.py --heads dot mol mol_fused \
      --precisions fp32 --variants eager --output "$OUT/bench_mol.md" 2>&1 | grep -E "ms \(" | tail -n 3
    ;;
  *)
    sed -n 2,16p "$0"
    exit 2
    ;;
esac
