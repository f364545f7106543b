#!/usr/bin/env bash
# GPU round 24 (after round 23), on one H200 (kind nvidia-h200), calls chained within 30 s:
#
#   start   : seven trainings at once. Round 23 (docs/mol_investigation.md §0.15): trained and ranked by MoL + cosine
#             (`model/similarity_blend=cosine`), round 22's head recipe, now `model/mol_recipe=joint`, leads on both
#             datasets (ML-1M .3236 / .1856, Beauty HSTU-large .1007 / .0565, SASRec .0905 / .0512), and Beauty's best
#             published row (.1008 / .0611) is matched in HR@10, not in NDCG@10 (92.5 %).
#             - the three recipes through the new config group (seed 1; their best checkpoints come back as
#               ckpts.tar.gz, without training state: the trained-model problems of the next top-k benchmark,
#               issue #13): ML-1M HSTU-large (101 epochs), Beauty HSTU-large 8x8x32 (fp32, 41 epochs), Beauty SASRec
#               8x8x32 (101 epochs);
#             - Beauty HSTU-large screens for the NDCG@10 gap (seed 1, fp32, 41 epochs): MoL (joint + blend) and dot
#               with item_dim 128 (the Books preset's 64 so far), MoL with 2,048 negatives (512 so far), dot with the
#               full softmax over every item (BSARec's published loss; sampled 512 so far).
#   wait    : `wait 560` until "sweeps still running: 0" (~22 min; the last wait runs `usage`, which now reads the
#             blend runs' MoL part).
#
#   here first: .whl/ (scripts/gpu_wheels.sh), .devdata/ with ml-1m-seq and amazon-beauty (../shared/data)
#   run(kind="nvidia-h200", carry=[".whl", ".devdata"], command="bash scripts/ablations/round24.sh start"),
#   then `wait 560` until "sweeps still running: 0". No timing beside the trainings: the 10M-item profile and the
#   top-k benchmark on these checkpoints are the session after's (issue #13):
#     PROFILE_TESTS=0 PROFILE_ITEMS=10000000 PROFILE_LIMIT=540 PROFILE_MERGES='1 16' bash scripts/ablations/round24.sh profile
#     bash scripts/ablations/round20.sh topk .devdata/ckpts/r24_*/0.ckpt   (then `round20.sh wait 560`)
#
# Here afterwards: `mkdir -p .devdata && tar -xzf <files_at>/ckpts.tar.gz -C .devdata` (git-ignored; keep a copy
# outside the checkout too), `python scripts/ingest_runs.py <files_at>/runs.tar.gz results/runs/<date>-<kind>-round24
# --strip-prefix r24_`, scripts/make_results.py, `python scripts/screen_report.py results/runs/<date>-<kind>-round24
# --reference beauty_hstu_large_dot_dim128 --only beauty_hstu --epochs 4 9 19 39 --out docs/screens/<date>-round24.md`,
# the reading into docs/mol_investigation.md (mol_pair_usage.* -> results/studies/<date>-<kind>-round24-pair-usage.*).
ROUND=r24
EPOCHS=${EPOCHS:-101}
export COLLECT_CKPT=${COLLECT_CKPT:-1}
export COLLECT_CKPT_GLOB=${COLLECT_CKPT_GLOB:-'r24_@(ml1m_hstu_large|beauty_hstu_large|beauty_sasrec)_mol_joint_blend/0'}
# shellcheck source=round_steps.sh
source "$(dirname "$0")/round_steps.sh"

trainings() {  # the leading recipe through its config group (checkpoints for #13); Beauty HSTU-large NDCG screens
  local mol=(model/mol_recipe=joint model/similarity_blend=cosine)
  local beauty_hstu=(trainer.precision=32-true)
  screen ml1m_hstu_large_mol_joint_blend experiment=ml_1m_seq_hstu_large_mol "${mol[@]}"
  screen beauty_sasrec_mol_joint_blend experiment=amazon_beauty_sasrec_mol "${mol[@]}"
  EPOCHS=41 screen beauty_hstu_large_mol_joint_blend experiment=amazon_beauty_hstu_large_mol "${beauty_hstu[@]}" \
    "${mol[@]}"
  EPOCHS=41 screen beauty_hstu_large_mol_joint_blend_dim128 experiment=amazon_beauty_hstu_large_mol \
    "${beauty_hstu[@]}" "${mol[@]}" model.item_dim=128
  EPOCHS=41 screen beauty_hstu_large_dot_dim128 experiment=amazon_beauty_hstu_large_dot "${beauty_hstu[@]}" \
    model.item_dim=128
  EPOCHS=41 screen beauty_hstu_large_mol_joint_blend_neg2048 experiment=amazon_beauty_hstu_large_mol \
    "${beauty_hstu[@]}" "${mol[@]}" model.negatives.num_negatives=2048
  EPOCHS=41 screen beauty_hstu_large_dot_full_softmax experiment=amazon_beauty_hstu_large_dot "${beauty_hstu[@]}" \
    model/negatives=full_softmax
}

round_main "$@"
