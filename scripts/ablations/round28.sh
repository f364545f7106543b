#!/usr/bin/env bash
# GPU round 28 (after round 27), on one H200 (kind nvidia-h200), calls chained within 30 s:
#
#   start : Round 27 (docs/mol_investigation.md §0.19) put the Beauty HSTU-large MoL head (item_dim 128, 2,048
#           negatives, joint + blend) with a weight average (`callbacks/weight_averaging=ema`, decay 0.999) at
#           1.087x / 1.066x the dot head without one on test (3 seeds each). Is the average a MoL lever or one
#           that lifts any head? The dot row with the same average, seeds 1-3 (61 epochs, fp32); alone on the
#           H200 three dot trainings run 61 epochs in ~8-9 min: `start`, then `wait 560`.
#   wait  : `wait 560` until "sweeps still running: 0" (the last wait runs `usage`).
#
#   here first: .whl/ (scripts/gpu_wheels.sh), .devdata/amazon-beauty (../shared/data)
#   run(kind="nvidia-h200", carry=[".whl", ".devdata/amazon-beauty"], command="bash scripts/ablations/round28.sh
#   start"), then `bash scripts/ablations/round28.sh wait 560` until "sweeps still running: 0".
#
# Here afterwards: `python scripts/ingest_runs.py <files_at>/runs.tar.gz results/runs/<date>-<kind>-round28
# --strip-prefix r28_`, scripts/make_results.py, `python scripts/screen_report.py` of round 27 and 28's directories
# against beauty_hstu_large_dot_d128_n2048_e61_ema, the reading into docs/mol_investigation.md (§0.19's follow-up).
# If the machine goes before the tests, scripts/curve_report.py reads the validation curves of partial.tar.gz.
ROUND=r28
EPOCHS=${EPOCHS:-61}
# shellcheck source=round_steps.sh
source "$(dirname "$0")/round_steps.sh"

trainings() {  # Beauty HSTU-large + dot at item_dim 128 + 2,048 negatives with a weight average (3 seeds)
  local beauty=(trainer.precision=32-true model.item_dim=128 model.negatives.num_negatives=2048)
  SEEDS=1,2,3 screen beauty_hstu_large_dot_d128_n2048_e61_ema experiment=amazon_beauty_hstu_large_dot "${beauty[@]}" \
    callbacks/weight_averaging=ema
  return 0
}

round_main "$@"
