#!/usr/bin/env bash
# Issue #12, round 5: which negatives? ML-1M (shared copy), paper protocol, 101 epochs, seed 1 each.
# The paper samples 128 uniform negatives per position (model/negatives=uniform); here the alternatives of
# rails.models.losses.negatives: the full softmax over the 3,883-movie corpus, 2,048 shared negatives, the
# reference's in-batch sampler, for both heads (MoL's gating runs on every (position, negative) pair, so MoL
# gets 512 shared negatives, not the full corpus: about 20 GB of activations at M ~ 19K positions).
#
#   device: run(command="bash scripts/ablations/negatives_round5.sh && bash scripts/gpu_sweep.sh wait 520",
#               carry=[".whl", ".devdata"])
#   then:   run(command="bash scripts/gpu_sweep.sh wait 560")   (within 30 s, until "sweeps still running: 0")
set -uo pipefail
cd "$(dirname "$0")/../.."
export RAILS_SRC=${RAILS_SRC:-$PWD/src} PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True OMP_NUM_THREADS=1
common=(data.root="$PWD/.devdata" ++callbacks.progress_bar=null trainer.enable_progress_bar=false seed=1)
start() { local name=$1; shift; bash scripts/gpu_sweep.sh start "neg_$name" "$@" "${common[@]}"; }
dot=experiment=ml_1m_seq_hstu_large_dot
mol=experiment=ml_1m_seq_hstu_large_mol
start dot_full $dot model/negatives=full_softmax
start dot_shared2048 $dot model/negatives=shared model.negatives.num_negatives=2048
start dot_in_batch $dot model/negatives=in_batch
start sasrec_dot_full experiment=ml_1m_seq_sasrec_dot model/negatives=full_softmax
start mol_shared512 $mol model/negatives=shared model.negatives.num_negatives=512
start mol_in_batch $mol model/negatives=in_batch
