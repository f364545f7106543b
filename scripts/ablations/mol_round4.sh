#!/usr/bin/env bash
# Issue #12, round 4: MoL settings on ML-1M (shared copy), HSTU-large + MoL, paper protocol, 101 epochs,
# seed 1 each (a screen: differences under ~0.005 HR@10 are seed noise; keep what helps, then 3 seeds).
# Round 1-2 facts this screen follows (docs/mol_investigation.md §0): MoL is x1.021 HR@10 over dot (paper
# x1.036), it peaks earlier than dot (best epochs 49-74 vs 67-100: more regularisation may pay), 512
# negatives helped dot more than MoL.
#
#   device: run(command="bash scripts/ablations/mol_round4.sh && bash scripts/gpu_sweep.sh wait 520",
#               carry=[".whl", ".devdata"])
#   then:   run(command="bash scripts/gpu_sweep.sh wait 560")   (within 30 s, until "sweeps still running: 0")
#
# 12 jobs at once (each CPU-bound by kernel launches on a 16-core machine), about 20 min.
set -uo pipefail
cd "$(dirname "$0")/../.."
export RAILS_SRC=${RAILS_SRC:-$PWD/src} PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True OMP_NUM_THREADS=1
common=(data.root="$PWD/.devdata" ++callbacks.progress_bar=null trainer.enable_progress_bar=false seed=1)
mol=experiment=ml_1m_seq_hstu_large_mol
# One variant per job: a multirun over a list of override *sets* is not expressible with Hydra's sweep
# syntax, so each set gets its own single-job sweep (name = what it changes).
start() { local name=$1; shift; bash scripts/gpu_sweep.sh start "mol_$name" $mol "$@" "${common[@]}"; }
start shape_8x8x32 model.similarity.num_item_components=8 model.similarity.component_dim=32
start no_softmax_dropout model.similarity.softmax_dropout=0.0
start item_dropout_0.3 model.similarity.item_dropout=0.3
start mi_0.01 model.similarity.mi_loss_weight=0.01
start tau_0.1 model.similarity.temperature=0.1
start tau_0.02 model.similarity.temperature=0.02
start wd_0.01 model.optimizer.weight_decay=0.01
start encoder_dropout_0.3 model.encoder.dropout=0.3 model.encoder.linear_dropout=0.3
start lr_5e-4 model.optimizer.lr=5e-4
start gating_qi_dropout_0.1 model.similarity.gating_qi_dropout=0.1
start n256 model.negatives.num_negatives=256
start qhidden_1024 model.similarity.query_hidden_dim=1024
