#!/usr/bin/env bash
# Multi-GPU / multi-node training with torchrun (one process per GPU; Lightning does not start processes).
#
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 GPUS=8 RUN_DIR=logs/train/runs/ml1m_hstu_2x8 \
#     scripts/launch_torchrun.sh experiment=<preset>          # on node 0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 GPUS=8 RUN_DIR=logs/train/runs/ml1m_hstu_2x8 \
#     scripts/launch_torchrun.sh experiment=<preset>          # on node 1 (same RUN_DIR, shared filesystem)
#
# Every rank runs the Hydra app; the explicit hydra.run.dir makes all of them write into ONE run directory
# (otherwise each rank would create its own timestamped directory). Extra arguments are Hydra overrides.
# Resume a killed run: add `ckpt_path=last` with the same RUN_DIR.
set -euo pipefail

GPUS=${GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
RUN_DIR=${RUN_DIR:-logs/train/runs/torchrun_$(date +%Y-%m-%d_%H-%M-%S)}

exec torchrun \
  --nnodes="${NNODES}" --node_rank="${NODE_RANK}" --nproc_per_node="${GPUS}" \
  --master_addr="${MASTER_ADDR}" --master_port="${MASTER_PORT}" \
  -m rails.train \
  trainer=ddp trainer.devices="${GPUS}" trainer.num_nodes="${NNODES}" \
  hydra.run.dir="${RUN_DIR}" \
  "$@"
