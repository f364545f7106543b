#!/usr/bin/env bash
# GPU round 9 (after round 8), one two-GPU machine (kind nvidia-h200-x2): Amazon Beauty to convergence for issue
# #12 deliverable 4 (best rails model >= .1008 / .0611 test HR@10 / NDCG@10, MoL >= dot; 3 seeds, S3-Rec protocol
# = data.holdout=2, full ranking). Twelve trainings at once, six per GPU through MPS, started detached, then
# collected by `wait` calls:
#
#   GPU 0: SASRec + dot (Books recipe: 4 blocks, d 64, dropout 0.5, 512 uniform negatives), seeds 1-3;
#          SASRec + dot with a full softmax over the 12,101 items (round 3's best early curve), seeds 1-3.
#   GPU 1: SASRec + MoL 8x8x32 (Books recipe: GeGLU, no uid, bf16 head) with item dropout 0.3 (the ML-1M finding
#          of round 7), seeds 1-3; HSTU-large + dot with real timestamps (round 3: +5 % over positions), seeds 1-3.
#
#   run(kind="nvidia-h200-x2", carry=[".whl", ".devdata"], command="bash scripts/ablations/x2_round9.sh start")
#   run(command="bash scripts/ablations/x2_round9.sh wait 570")     (again until "sweeps still running: 0")
#   ml1m: the remaining ML-1M ablations of deliverable 3 (attention kernel, fp32, in-batch negatives), same way.
#
# Here afterwards: runs.tar.gz into results/runs/<date>-h200x2-round9/ and scripts/make_results.py; the rows
# go into docs/mol_investigation.md (Beauty) and, per preset, the README table.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True OMP_NUM_THREADS=1 MPS=${MPS:-1} PYTHONUNBUFFERED=1
common=(data.root="$PWD/.devdata" ++callbacks.progress_bar=null trainer.enable_progress_bar=false
  trainer.max_epochs=201)
sweep() {
  local gpu=$1 name=$2
  shift 2
  CUDA_VISIBLE_DEVICES=$gpu bash scripts/gpu_sweep.sh start "$name" hydra/launcher=parallel "$@" "${common[@]}"
}

GPU_A=${BEAUTY_GPU_A:-0}  # the SASRec + dot sweeps (round 11 puts everything on GPU 1: BEAUTY_GPU_A=1)
GPU_B=${BEAUTY_GPU_B:-1}
case "${1:-}" in
  start)
    sweep "$GPU_A" r9_beauty_sasrec_dot hydra.launcher.n_jobs=3 experiment=amazon_beauty_sasrec_dot seed=1,2,3
    sweep "$GPU_A" r9_beauty_sasrec_dot_full hydra.launcher.n_jobs=3 experiment=amazon_beauty_sasrec_dot \
      model/negatives=full_softmax model.negatives.num_negatives=null seed=1,2,3
    sweep "$GPU_B" r9_beauty_sasrec_mol hydra.launcher.n_jobs=3 experiment=amazon_beauty_sasrec_mol \
      model.similarity.item_dropout=0.3 seed=1,2,3
    sweep "$GPU_B" r9_beauty_hstu_large_dot hydra.launcher.n_jobs=3 experiment=amazon_beauty_hstu_large_dot \
      data.timestamps=data seed=1,2,3
    [ "${NO_WAIT:-0}" = 1 ] || bash scripts/gpu_sweep.sh wait "${2:-480}"
    ;;
  ml1m)
    # The ML-1M ablations of issue #12 deliverable 3 not run yet (HSTU-large + dot, 2 seeds each): the PyTorch
    # attention instead of the Triton kernel, full fp32 matmuls instead of TF32, in-batch negatives.
    large=experiment=ml_1m_seq_hstu_large_dot
    sweep "${ML1M_GPU:-1}" r9_attention_torch hydra.launcher.n_jobs=2 $large model.encoder.attention_impl=torch seed=1,2
    sweep "${ML1M_GPU:-1}" r9_fp32_highest hydra.launcher.n_jobs=2 $large matmul_precision=highest seed=1,2
    sweep "${ML1M_GPU:-1}" r9_in_batch hydra.launcher.n_jobs=2 $large model/negatives=in_batch seed=1,2
    [ "${NO_WAIT:-0}" = 1 ] || bash scripts/gpu_sweep.sh wait "${2:-480}"
    ;;
  wait)
    bash scripts/gpu_sweep.sh wait "${2:-570}"
    ;;
  *)
    sed -n 2,17p "$0"
    exit 2
    ;;
esac
