#!/usr/bin/env bash
# GPU round 13 (after round 12), one two-GPU machine (kind nvidia-h200-x2), detached trainings + wait calls:
#
#   start : GPU 0: ML-1M HSTU-large + MoL, item dropout 0.3 (round 7's best), with the fused training mixture
#           (`model.similarity.fused_mixing=true`, seeds 1-3): the quality check before the fused mixture becomes
#           the MoL presets' default on CUDA (it must match the PyTorch mixture's .3216 / .1830 within seed
#           noise), and the same preset at 151 epochs (seeds 1-2: round 7's best epochs were 89-99 of 101).
#           GPU 1: the ML-1M ablations of issue #12 deliverable 3 still missing (x2_round9.sh `ml1m`: PyTorch
#           attention, full fp32 matmuls, in-batch negatives; HSTU-large + dot, 2 seeds each).
#   opt   : learning rate 5e-4 and batch 256 for HSTU-large + dot (2 seeds each, GPU 0), when `start` is done.
#   wait  : bash scripts/gpu_sweep.sh wait, collecting finished runs (runs.tar.gz, partial.tar.gz).
#
#   run(kind="nvidia-h200-x2", carry=[".whl", ".devdata"], command="bash scripts/ablations/x2_round13.sh start")
#   run(command="bash scripts/ablations/x2_round13.sh wait 570")     (again until "sweeps still running: 0")
#
# Here afterwards: runs.tar.gz into results/runs/<date>-h200x2-round13/ (strip the r12_ / r9_ prefixes) and
# scripts/make_results.py; rows into docs/mol_investigation.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True OMP_NUM_THREADS=1 MPS=${MPS:-1} PYTHONUNBUFFERED=1
common=(data.root="$PWD/.devdata" ++callbacks.progress_bar=null trainer.enable_progress_bar=false)
mol=(experiment=ml_1m_seq_hstu_large_mol model.similarity.item_dropout=0.3)

case "${1:-}" in
  start)
    CUDA_VISIBLE_DEVICES=0 bash scripts/gpu_sweep.sh start r12_mol_do03_fused hydra/launcher=parallel \
      hydra.launcher.n_jobs=3 "${mol[@]}" model.similarity.fused_mixing=true seed=1,2,3 "${common[@]}"
    CUDA_VISIBLE_DEVICES=0 bash scripts/gpu_sweep.sh start r12_mol_do03_151ep hydra/launcher=parallel \
      hydra.launcher.n_jobs=2 "${mol[@]}" trainer.max_epochs=151 seed=1,2 "${common[@]}"
    NO_WAIT=1 bash scripts/ablations/x2_round9.sh ml1m
    sleep 30
    nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
    ;;
  opt)
    # optimisation ablations of issue #12 deliverable 3 (HSTU-large + dot, 2 seeds each; the paper: AdamW lr 1e-3,
    # constant, batch 128): half the learning rate, twice the batch (GPU 0; start after `start` has finished)
    dot=experiment=ml_1m_seq_hstu_large_dot
    CUDA_VISIBLE_DEVICES=0 bash scripts/gpu_sweep.sh start r12_dot_lr5e-4 hydra/launcher=parallel \
      hydra.launcher.n_jobs=2 $dot model.optimizer.lr=5e-4 seed=1,2 "${common[@]}"
    CUDA_VISIBLE_DEVICES=0 bash scripts/gpu_sweep.sh start r12_dot_batch256 hydra/launcher=parallel \
      hydra.launcher.n_jobs=2 $dot data.batch_size=256 seed=1,2 "${common[@]}"
    ;;
  wait)
    bash scripts/gpu_sweep.sh wait "${2:-570}"
    ;;
  *)
    sed -n 2,19p "$0"
    exit 2
    ;;
esac
