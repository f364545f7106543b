#!/usr/bin/env bash
# Multi-node DDP on SLURM with srun (one task per GPU; Lightning reads the SLURM environment).
#
#   sbatch --nodes=2 --gpus-per-node=8 --ntasks-per-node=8 --cpus-per-task=8 --time=24:00:00 \
#     scripts/launch_slurm.sh experiment=<preset>
#
# All tasks share hydra.run.dir (keyed by the SLURM job id). For sweeps on SLURM use the Hydra submitit
# launcher instead: `rails-train -m hydra/launcher=slurm trainer=ddp ...` (docs/operations.md).
#SBATCH --job-name=rails
#SBATCH --output=logs/slurm/%j.out
set -euo pipefail

NODES=${SLURM_JOB_NUM_NODES:?run this script through sbatch}
GPUS=${SLURM_GPUS_ON_NODE:-${SLURM_NTASKS_PER_NODE:-1}}
RUN_DIR=${RUN_DIR:-logs/train/runs/slurm_${SLURM_JOB_ID}}

srun python -m rails.train \
  trainer=ddp trainer.devices="${GPUS}" trainer.num_nodes="${NODES}" \
  hydra.run.dir="${RUN_DIR}" \
  "$@"
