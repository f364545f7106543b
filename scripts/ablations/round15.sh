#!/usr/bin/env bash
# GPU round 15 (after rounds 14 and 16), on one H200 (kind nvidia-h200), a session of its own: the 3-seed rows of issue #12
# deliverable 4 on Amazon Beauty (S3-Rec protocol, 101 epochs; round 12's curves are flat from about epoch 40).
#
#   start : thirteen trainings through MPS, detached: SASRec + MoL and HSTU-large + MoL (fp32, item dropout 0.3)
#           with the winning head setting of rounds 14 / 16 (MOL_SETTING: the overrides of the screen that closed the
#           gap to the dot product, e.g. MOL_SETTING='model.similarity.identity_components=true
#           model.similarity.component_dim=64 model.similarity.num_item_components=4'), seeds 1-3 each; SASRec + dot
#           seeds 1-3 (the MoL rows' reference at the same epochs); seeds 2-3 of round 12's two best dot models
#           (HSTU-large + dot in fp32 .0948 / .0531, BSARec + dot .0932 / .0539; seed 1 is round 12's run).
#           BSAREC_MOL=1 adds BSARec + MoL with that setting, seeds 1-3, 41 epochs (if round 16's BSARec screen won).
#   wait  : `wait 560` until "sweeps still running: 0" (estimate 20-25 min: HSTU-large and BSARec are the slow ones).
#
#   run(kind="nvidia-h200", carry=[".whl", ".devdata"],
#       command="MOL_SETTING='<overrides>' bash scripts/ablations/round15.sh start"), then `wait 560` calls.
#   (bench / profile of round_steps.sh are here too, for a session with time left.)
#
# Here afterwards: `python scripts/ingest_runs.py <files_at>/runs.tar.gz results/runs/<date>-<kind>-round15
# --strip-prefix r15_`, scripts/make_results.py (the seed-1 runs of round 12 join the dot rows: same variant).
ROUND=r15
# shellcheck source=round_steps.sh
source "$(dirname "$0")/round_steps.sh"

trainings() {  # the 3-seed rows, detached on $TRAIN_GPU
  if [ -z "${MOL_SETTING:-}" ]; then
    echo "MOL_SETTING is empty: give the overrides of the best MoL screen (docs/mol_investigation.md)" >&2
    exit 2
  fi
  local setting=()
  read -r -a setting <<<"${MOL_SETTING:-}"
  SEEDS=1,2,3 screen beauty_sasrec_mol_best experiment=amazon_beauty_sasrec_mol model.similarity.item_dropout=0.3 \
    "${setting[@]}"
  SEEDS=1,2,3 screen beauty_hstu_large_mol_best experiment=amazon_beauty_hstu_large_mol trainer.precision=32-true \
    model.similarity.item_dropout=0.3 "${setting[@]}"
  SEEDS=1,2,3 screen beauty_sasrec_dot experiment=amazon_beauty_sasrec_dot
  SEEDS=2,3 screen beauty_hstu_large_dot_fp32 experiment=amazon_beauty_hstu_large_dot trainer.precision=32-true
  SEEDS=2,3 screen beauty_bsarec_dot experiment=amazon_beauty_bsarec_dot
  if [ "${BSAREC_MOL:-0}" = 1 ]; then
    SEEDS=1,2,3 EPOCHS=41 screen beauty_bsarec_mol_best experiment=amazon_beauty_bsarec_mol \
      model.similarity.item_dropout=0.3 "${setting[@]}"
  fi
}

round_main "$@"
