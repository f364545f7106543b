#!/usr/bin/env bash
# GPU round 26 (after round 25), on one H200 (kind nvidia-h200), calls chained within 30 s:
#
#   start : Round 25 (docs/mol_investigation.md §0.17) gave three seeds of Beauty HSTU-large MoL (joint + blend) at
#           item_dim 128 with 2,048 negatives, .1006 / .0580 (94.9 % of BSARec's published NDCG@10 .0611), whose
#           validation level is reached by epoch 20 and then held; the dot head with the same changes was stopped at
#           epoch 19 (MoL / dot has no row yet). This round:
#           - Beauty HSTU-large + dot, item_dim 128, 2,048 negatives, seeds 1-3, 61 epochs (fp32): the dot row the new
#             MoL row is compared with (issue #12: MoL >= dot);
#           - an exponential moving average of the weights (`callbacks/weight_averaging=ema`, new: validation, the
#             checkpoint's selection, its weights and the test use the average) on both Beauty heads (seed 1, the
#             same recipe, decay 0.999: ~6 epochs of 175 steps), and on ML-1M HSTU-large MoL (joint + blend) with 512
#             negatives (seed 1, 101 epochs, decay 0.995: ~4 epochs of 47 steps), each against round 25's seed 1 or
#             this round's dot seed 1 (the same seeds and settings without the average).
#   wait  : `wait 560` until "sweeps still running: 0" (~20 min; the last wait runs `usage`).
#   If the average lifts Beauty MoL: `ONLY=mol_d128_n2048_e61_ema EMA_SEEDS=2,3 bash scripts/ablations/round26.sh
#   start` trains seeds 2 and 3 of it (the same sweep name: make_results pools them with seed 1).
#
#   here first: .whl/ (scripts/gpu_wheels.sh), .devdata/ with ml-1m-seq and amazon-beauty (../shared/data)
#   run(kind="nvidia-h200", carry=[".whl", ".devdata"], command="bash scripts/ablations/round26.sh start"), then
#   `bash scripts/ablations/round26.sh wait 560` until "sweeps still running: 0".
#
# Here afterwards: `python scripts/ingest_runs.py <files_at>/runs.tar.gz results/runs/<date>-<kind>-round26
# --strip-prefix r26_`, scripts/make_results.py, `python scripts/screen_report.py results/runs/<date>-<kind>-round26
# --only beauty --epochs 9 19 39 59 --out docs/screens/<date>-round26-beauty.md` (and `--only ml1m --epochs 9 29 59
# 99`), the reading into docs/mol_investigation.md (mol_pair_usage.* -> results/studies/<date>-<kind>-round26-*).
# The Beauty MoL seed-1 checkpoint with the average comes back as ckpts.tar.gz (a trained-model problem of the top-k
# benchmark, issue #13).
ROUND=r26
EPOCHS=${EPOCHS:-101}
export COLLECT_CKPT=${COLLECT_CKPT:-1}
export COLLECT_CKPT_GLOB=${COLLECT_CKPT_GLOB:-'r26_beauty_hstu_large_mol_d128_n2048_e61_ema/0'}
# shellcheck source=round_steps.sh
source "$(dirname "$0")/round_steps.sh"

trainings() {  # Beauty HSTU-large dot at item_dim 128 + 2,048 negatives (3 seeds); EMA screens on Beauty and ML-1M
  local mol=(model/mol_recipe=joint model/similarity_blend=cosine)
  local beauty=(trainer.precision=32-true model.item_dim=128 model.negatives.num_negatives=2048)
  local ema=(callbacks/weight_averaging=ema)
  SEEDS=1,2,3 EPOCHS=61 screen beauty_hstu_large_dot_d128_n2048_e61 experiment=amazon_beauty_hstu_large_dot \
    "${beauty[@]}"
  SEEDS=${EMA_SEEDS:-1} EPOCHS=61 screen beauty_hstu_large_mol_d128_n2048_e61_ema experiment=amazon_beauty_hstu_large_mol \
    "${beauty[@]}" "${mol[@]}" "${ema[@]}"
  SEEDS=1 EPOCHS=61 screen beauty_hstu_large_dot_d128_n2048_e61_ema experiment=amazon_beauty_hstu_large_dot \
    "${beauty[@]}" "${ema[@]}"
  SEEDS=1 screen ml1m_hstu_large_mol_joint_blend_n512_ema experiment=ml_1m_seq_hstu_large_mol "${mol[@]}" \
    model.negatives.num_negatives=512 "${ema[@]}" callbacks.weight_averaging.decay=0.995
  return 0
}

round_main "$@"
