#!/usr/bin/env bash
# GPU round 27 (after round 26), on one H200 (kind nvidia-h200), calls chained within 30 s:
#
#   start : Round 26 (docs/mol_investigation.md §0.18) lost its device machine before the tests: on validation the
#           Beauty HSTU-large dot head with item_dim 128 and 2,048 negatives trails §0.17's MoL row (NDCG@10 .0639
#           vs .0660, 3 seeds each), and an exponential moving average of the weights lifted one MoL seed's validation
#           NDCG@10 by 3.2 % (.0681). This round gets the tests of both, six trainings at once (61 epochs, fp32):
#           - Beauty HSTU-large + dot, item_dim 128, 2,048 negatives, seeds 1-3: the dot row of §0.17's MoL row;
#           - the MoL row's recipe (joint + blend) with `callbacks/weight_averaging=ema` (decay 0.999), seeds 1-3.
#           Alone on the H200, round 26's four trainings ran 61 epochs in ~10 min (dot) and ~13 min (averaged MoL):
#           `start`, then `wait 560` twice.
#   wait  : `wait 560` until "sweeps still running: 0" (the last wait runs `usage`).
#   profile (when the trainings are done and >= 5 min of device time are left): the 16-warp launches of the fused
#           exact top-k (issue #13; 256-pair tiles, two warps per scheduler -> four) against the tuned 4x32x8:
#           PROFILE_TESTS=0 PROFILE_ITEMS=1000000 PROFILE_LIMIT=300 PROFILE_MERGES=16 \
#           PROFILE_BLOCKS='4x32x8 8x32x16 4x64x16' PROFILE_CHUNKS='0 64' bash scripts/ablations/round27.sh profile
#
#   here first: .whl/ (scripts/gpu_wheels.sh), .devdata/amazon-beauty (../shared/data)
#   run(kind="nvidia-h200", carry=[".whl", ".devdata/amazon-beauty"], command="bash scripts/ablations/round27.sh
#   start"), then `bash scripts/ablations/round27.sh wait 560` until "sweeps still running: 0".
#
# Here afterwards: `python scripts/ingest_runs.py <files_at>/runs.tar.gz results/runs/<date>-<kind>-round27
# --strip-prefix r27_`, scripts/make_results.py (the dot row; the averaged MoL row if it is the best three-seed one),
# `python scripts/screen_report.py results/runs/<date>-<kind>-round27 --reference beauty_hstu_large_dot_d128_n2048_e61
# --epochs 9 19 39 59 --out docs/screens/<date>-round27-beauty.md`, the reading into docs/mol_investigation.md
# (§0.18's follow-up), mol_pair_usage.* -> results/studies/<date>-<kind>-round27-*. The averaged MoL seed-1 checkpoint
# comes back as ckpts.tar.gz (a trained-model problem of the top-k benchmark, issue #13).
ROUND=r27
EPOCHS=${EPOCHS:-61}
export COLLECT_CKPT=${COLLECT_CKPT:-1}
export COLLECT_CKPT_GLOB=${COLLECT_CKPT_GLOB:-'r27_beauty_hstu_large_mol_d128_n2048_e61_ema/0'}
# shellcheck source=round_steps.sh
source "$(dirname "$0")/round_steps.sh"

trainings() {  # Beauty HSTU-large at item_dim 128 + 2,048 negatives: dot, and MoL with a weight average (3 seeds each)
  local beauty=(trainer.precision=32-true model.item_dim=128 model.negatives.num_negatives=2048)
  SEEDS=1,2,3 screen beauty_hstu_large_dot_d128_n2048_e61 experiment=amazon_beauty_hstu_large_dot "${beauty[@]}"
  SEEDS=1,2,3 screen beauty_hstu_large_mol_d128_n2048_e61_ema experiment=amazon_beauty_hstu_large_mol "${beauty[@]}" \
    model/mol_recipe=joint model/similarity_blend=cosine callbacks/weight_averaging=ema
  return 0
}

round_main "$@"
