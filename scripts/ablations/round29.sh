#!/usr/bin/env bash
# GPU round 29 (after rounds 27 and 28), on one H200 (kind nvidia-h200), calls chained within 30 s:
#
#   start : Round 27 (docs/mol_investigation.md §0.19) made the weight average (`callbacks/weight_averaging=ema`,
#           decay 0.999) the best Beauty recipe: HSTU-large + MoL (item_dim 128, 2,048 negatives, joint + blend)
#           .1039 / .0603 over three seeds, 98.7 % of BSARec's published NDCG@10 (.0611). Round 28 showed the
#           average lifts the dot head too (validation NDCG@10 +2.9 %) and lost its tests to the device budget.
#           Six trainings at once (fp32; Beauty 61 epochs, ML-1M 101):
#           - Beauty HSTU-large + dot with the average, seeds 1-3: round 28 again, the like-for-like comparator;
#           - Beauty MoL with the average at decay 0.9995 (twice the averaging window: ~11 epochs of 175 steps), seed 1;
#           - Beauty MoL with the average and 4,096 negatives (2,048 lifted both heads over 512: §0.16), seed 1;
#           - ML-1M HSTU-large + MoL (joint + blend, 512 negatives) with the average at decay 0.995 (47 steps per
#             epoch), seed 1, paper protocol: issue #12's ML-1M rows have had no average yet.
#           Alone on the H200 round 27's six Beauty trainings ran 61 epochs in 14 (dot) and 17 min (MoL):
#           `start`, then `wait 560` twice. Seed 1 of a Beauty MoL screen is within .0003 of its three-seed mean
#           (round 27's spread): a screen that beats .0603 by more gets seeds 2-3 in the next round.
#   wait  : `wait 560` until "sweeps still running: 0" (the last wait runs `usage`).
#
#   here first: .whl/ (scripts/gpu_wheels.sh), .devdata/{amazon-beauty,ml-1m-seq,ml-1m-meta} (../shared/data; ML-1M
#   reads its catalog from ml-1m-meta: without it the ML-1M screen fails at once, as in the first attempt)
#   run(kind="nvidia-h200", carry=[".whl", ".devdata/amazon-beauty", ".devdata/ml-1m-seq", ".devdata/ml-1m-meta"],
#   command="bash scripts/ablations/round29.sh start"), then `bash scripts/ablations/round29.sh wait 560` until "sweeps still
#   running: 0". ONLY='<regex>' starts a subset (e.g. ONLY=beauty when the budget is short).
#
# Here afterwards: `python scripts/ingest_runs.py <files_at>/runs.tar.gz results/runs/<date>-<kind>-round29
# --strip-prefix r29_`, scripts/make_results.py, `python scripts/screen_report.py results/runs/<date>-<kind>-round29
# --only beauty --reference beauty_hstu_large_dot_d128_n2048_e61_ema --epochs 9 19 39 59 --out
# docs/screens/<date>-round29-beauty.md` (round 27's MoL row is the one to beat), the reading into
# docs/mol_investigation.md (§0.19's follow-up), mol_pair_usage.* -> results/studies/<date>-<kind>-round29-*.
ROUND=r29
export COLLECT_CKPT=${COLLECT_CKPT:-1}  # the ML-1M MoL model: a trained-checkpoint problem of bench_topk (issue #13)
export COLLECT_CKPT_GLOB=${COLLECT_CKPT_GLOB:-'r29_@(ml1m_hstu_large_mol_joint_blend_n512_ema|beauty_hstu_large_mol_d128_n4096_e61_ema)/0'}
EPOCHS=${EPOCHS:-61}
# shellcheck source=round_steps.sh
source "$(dirname "$0")/round_steps.sh"

trainings() {  # the averaged dot row's tests, the average's window and negatives on Beauty MoL, and ML-1M averaged
  local beauty=(trainer.precision=32-true model.item_dim=128) n2048=(model.negatives.num_negatives=2048)
  local mol=(model/mol_recipe=joint model/similarity_blend=cosine)
  local ema=(callbacks/weight_averaging=ema)
  SEEDS=1,2,3 screen beauty_hstu_large_dot_d128_n2048_e61_ema experiment=amazon_beauty_hstu_large_dot "${beauty[@]}" \
    "${n2048[@]}" "${ema[@]}"
  SEEDS=1 screen beauty_hstu_large_mol_d128_n2048_e61_ema9995 experiment=amazon_beauty_hstu_large_mol "${beauty[@]}" \
    "${n2048[@]}" "${mol[@]}" "${ema[@]}" callbacks.weight_averaging.decay=0.9995
  SEEDS=1 screen beauty_hstu_large_mol_d128_n4096_e61_ema experiment=amazon_beauty_hstu_large_mol "${beauty[@]}" \
    "${mol[@]}" "${ema[@]}" model.negatives.num_negatives=4096
  SEEDS=1 EPOCHS=101 screen ml1m_hstu_large_mol_joint_blend_n512_ema experiment=ml_1m_seq_hstu_large_mol "${mol[@]}" \
    model.negatives.num_negatives=512 "${ema[@]}" callbacks.weight_averaging.decay=0.995
  return 0
}

round_main "$@"
