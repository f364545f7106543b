#!/usr/bin/env bash
# GPU round 25 (after round 24), on one H200 (kind nvidia-h200), calls chained within 30 s:
#
#   start : Round 24 (docs/mol_investigation.md §0.16) screened Beauty HSTU-large's NDCG@10 gap (seed 1, 41 epochs):
#           item_dim 128 lifts both heads (dot .0976 / .0551, MoL joint + blend .1012 / .0577), 2,048 negatives lift
#           MoL most (.1036 / .0582, the best Beauty row so far), and both stopped on their best epoch (39 of 41).
#           - Beauty HSTU-large with both (item_dim 128, 2,048 negatives), MoL (joint + blend) and dot, seeds 1-3,
#             ${BEAUTY_EPOCHS:-61} epochs (fp32): the Beauty rows of issue #12 against BSARec's .1008 / .0611;
#           - ML-1M HSTU-large screens (seed 1, 101 epochs; the absolute gap to the paper's .3412 / .1979): MoL (joint +
#             blend) with 512 negatives (128 so far), with item_dim 128 (50 so far), and dot with 512 negatives. Not
#             2,048: at ~21 k positions per batch that is ~43 M scored pairs per step, 4x the 512 that round 1 trained
#             on the H200 (docs/mol_investigation.md §0). The CPU smoke runs of both MoL screens with more negatives
#             outgrow this machine's 24 GiB and are killed (SMOKE=1 checks the other trainings). With
#             `model.similarity.sampled_checkpoint_columns=129` (the step's columns scored 129 at a time under
#             activation checkpointing) 2,048 fit: `ONLY=n2048_ckpt bash scripts/ablations/round25.sh start` trains
#             that screen alone (not in the default round: ~16x the head's work per step of the 128-negative preset).
#           The best checkpoints of the ML-1M MoL screen with 512 negatives and of the Beauty MoL seed 1 come back as
#           ckpts.tar.gz (without training state): the trained-model problems of the top-k benchmark (issue #13).
#           (`ONLY='_e41$' BEAUTY_EPOCHS=41 SEEDS=1 ... start` tried the two Beauty screens at seed 1 with round 24's
#           last device minutes: not finished, epochs 35 and 28 of 41.)
#   wait  : `wait 560` until "sweeps still running: 0" (the ML-1M screens: ~22 min; the last wait runs `usage`).
#
#   here first: .whl/ (scripts/gpu_wheels.sh), .devdata/ with ml-1m-seq and amazon-beauty (../shared/data)
#   run(kind="nvidia-h200", carry=[".whl", ".devdata"], command="bash scripts/ablations/round25.sh start"), then
#   `bash scripts/ablations/round25.sh wait 560` until "sweeps still running: 0".
#
# Here afterwards: `mkdir -p .devdata && tar -xzf <files_at>/ckpts.tar.gz -C .devdata` (git-ignored; keep a copy
# outside the checkout too), `python scripts/ingest_runs.py <files_at>/runs.tar.gz results/runs/<date>-<kind>-round25
# --strip-prefix r25_`, scripts/make_results.py, `python scripts/screen_report.py results/runs/<date>-<kind>-round25
# --reference ml1m_hstu_large_dot_n512 --only ml1m --epochs 9 29 59 99 --out docs/screens/<date>-round25-ml1m.md`,
# the reading into docs/mol_investigation.md (mol_pair_usage.* -> results/studies/<date>-<kind>-round25-pair-usage.*).
ROUND=r25
EPOCHS=${EPOCHS:-101}
export COLLECT_CKPT=${COLLECT_CKPT:-1}
export COLLECT_CKPT_GLOB=${COLLECT_CKPT_GLOB:-'r25_@(ml1m_hstu_large_mol_joint_blend_n512|beauty_hstu_large_mol_d128_n2048_e61)/0'}
# shellcheck source=round_steps.sh
source "$(dirname "$0")/round_steps.sh"

trainings() {  # Beauty HSTU-large at item_dim 128 and 2,048 negatives (3 seeds); ML-1M HSTU-large screens
  local mol=(model/mol_recipe=joint model/similarity_blend=cosine)
  local beauty=(trainer.precision=32-true model.item_dim=128 model.negatives.num_negatives=2048)
  local epochs=${BEAUTY_EPOCHS:-61} seeds=${SEEDS:-1,2,3}
  SEEDS=$seeds EPOCHS=$epochs screen "beauty_hstu_large_mol_d128_n2048_e$epochs" \
    experiment=amazon_beauty_hstu_large_mol "${beauty[@]}" "${mol[@]}"
  SEEDS=$seeds EPOCHS=$epochs screen "beauty_hstu_large_dot_d128_n2048_e$epochs" \
    experiment=amazon_beauty_hstu_large_dot "${beauty[@]}"
  SEEDS=1 screen ml1m_hstu_large_mol_joint_blend_n512 experiment=ml_1m_seq_hstu_large_mol "${mol[@]}" \
    model.negatives.num_negatives=512
  SEEDS=1 screen ml1m_hstu_large_mol_joint_blend_d128 experiment=ml_1m_seq_hstu_large_mol "${mol[@]}" \
    model.item_dim=128
  SEEDS=1 screen ml1m_hstu_large_dot_n512 experiment=ml_1m_seq_hstu_large_dot model.negatives.num_negatives=512
  [[ ${ONLY:-} == *n2048_ckpt* ]] && SEEDS=1 screen ml1m_hstu_large_mol_joint_blend_n2048_ckpt \
    experiment=ml_1m_seq_hstu_large_mol "${mol[@]}" model.negatives.num_negatives=2048 \
    model.similarity.sampled_checkpoint_columns=129
  return 0
}

round_main "$@"
