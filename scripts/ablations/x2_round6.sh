#!/usr/bin/env bash
# Issue #12, round 6 on one two-GPU machine (kind nvidia-h200-x2: 2 H200s, 32 CPU cores): the HSTU-gap
# round 3 on GPU 0, the MoL settings screen of round 4 and an Amazon Beauty screen on GPU 1, 29 trainings at
# once (each CPU-bound by kernel launches, so the 32 cores are what limits), plus the GPU test suite in the
# background on GPU 1 (log: /tmp/rails-gpu-tests/gpu_tests.log, copied to $OUT by `collect_tests`).
#
#   device: run(kind="nvidia-h200-x2", command="bash scripts/ablations/x2_round6.sh && bash scripts/gpu_sweep.sh
#               wait 500", carry=[".whl", ".devdata"])
#   then:   run(command="bash scripts/ablations/x2_round6.sh collect_tests; bash scripts/gpu_sweep.sh wait 560")
#           (within 30 s of the previous call, until "sweeps still running: 0")
set -uo pipefail
cd "$(dirname "$0")/../.."
if [ "${1:-}" = collect_tests ]; then
  mkdir -p "${OUT:-/tmp/out}" && cp /tmp/rails-gpu-tests/gpu_tests.log "${OUT:-/tmp/out}/" 2>/dev/null
  tail -n 25 /tmp/rails-gpu-tests/gpu_tests.log 2>/dev/null
  exit 0
fi
export RAILS_SRC=${RAILS_SRC:-$PWD/src} PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True OMP_NUM_THREADS=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

CUDA_VISIBLE_DEVICES=0 bash scripts/ablations/hstu_gap_round3.sh
CUDA_VISIBLE_DEVICES=1 bash scripts/ablations/mol_round4.sh

# Amazon Beauty (S3-Rec protocol, real timestamps), SASRec with the Amazon (Books) recipe of the presets,
# 101 epochs, seed 1: the dot and MoL presets, and the dot product trained with a full softmax over the
# 12,101 items (the loss of the strongest published Beauty rows) instead of 512 uniform negatives.
common=(data.root="$PWD/.devdata" ++callbacks.progress_bar=null trainer.enable_progress_bar=false seed=1
  trainer.max_epochs=101)
beauty() { local name=$1; shift; CUDA_VISIBLE_DEVICES=1 bash scripts/gpu_sweep.sh start "beauty_$name" "$@" "${common[@]}"; }
beauty sasrec_dot experiment=amazon_beauty_sasrec_dot
beauty sasrec_mol experiment=amazon_beauty_sasrec_mol
beauty sasrec_dot_full_softmax experiment=amazon_beauty_sasrec_dot model/negatives=full_softmax \
  model.negatives.num_negatives=null

# The GPU suite (correctness, not timing) in the background beside the trainings.
mkdir -p /tmp/rails-gpu-tests
CUDA_VISIBLE_DEVICES=1 OUT=/tmp/rails-gpu-tests setsid nohup bash scripts/device_gpu_tests.sh \
  >/tmp/rails-gpu-tests/stdout.txt 2>&1 &
echo "started the GPU test suite (pid $!)"
