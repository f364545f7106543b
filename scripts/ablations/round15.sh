#!/usr/bin/env bash
# GPU round 15 (a session of its own, after the screens of rounds 14-19), on one H200 (kind nvidia-h200): the 3-seed
# rows of issue #12 deliverable 4 on Amazon Beauty (S3-Rec protocol) for the MoL setting that closed the gap to the
# dot product in the screens (MOL_SETTING: its overrides on top of the MoL preset, e.g. MOL_SETTING='model.similarity.
# residual_components=true model.similarity.component_dim=64 model.similarity.num_query_components=8
# model.similarity.num_item_components=4 model.similarity.gating_item_dropout=0.3 model.similarity.gating_qi_dropout=0.2
# model.dot_loss_weight=1.0'). The epochs of rounds 17-19: HSTU-large in fp32 41 (best epochs 14-39), SASRec 61.
#
#   start : detached through MPS: HSTU-large + MoL with that setting (fp32, item dropout 0.3), seeds 1-3 (its dot
#           reference at 41 epochs in fp32: rounds 18 and 19, seeds 1-3, the same variant in results.md); unless
#           SASREC=0, SASRec + MoL with it and SASRec + dot, seeds 1-3 (61 epochs); BSARec + dot, seeds 1-3 at 41
#           epochs (round 12's 101-epoch run, .0932 / .0539, peaked at epochs 21-23); BSAREC_MOL=1 adds BSARec + MoL
#           with the setting. Twelve trainings (fifteen with BSAREC_MOL).
#           MOL_SEEDS (default 1,2,3) gives the seeds of the MoL and SASRec rows when a screen already ran seed 1;
#           BSAREC=0 skips BSARec + dot.
#   wait  : `wait 560` until "sweeps still running: 0" (about 12-15 min, as rounds 17-19).
#
#   run(kind="nvidia-h200", carry=[".whl", ".devdata"],
#       command="MOL_SETTING='<overrides>' bash scripts/ablations/round15.sh start"), then `wait 560` calls.
#   (bench / profile / topk of round_steps.sh are here too, for a session with time left.)
#
# Here afterwards: `python scripts/ingest_runs.py <files_at>/runs.tar.gz results/runs/<date>-<kind>-round15
# --strip-prefix r15_`, scripts/make_results.py (runs of the same variant from earlier rounds join the rows).
ROUND=r15
EPOCHS=${EPOCHS:-41}
# shellcheck source=round_steps.sh
source "$(dirname "$0")/round_steps.sh"

trainings() {  # the 3-seed rows, detached on $TRAIN_GPU
  if [ -z "${MOL_SETTING:-}" ]; then
    echo "MOL_SETTING is empty: give the overrides of the best MoL screen (docs/mol_investigation.md)" >&2
    exit 2
  fi
  local setting=()
  read -r -a setting <<<"${MOL_SETTING:-}"
  SEEDS=${MOL_SEEDS:-1,2,3} screen beauty_hstu_large_mol_best experiment=amazon_beauty_hstu_large_mol trainer.precision=32-true \
    model.similarity.item_dropout=0.3 "${setting[@]}"
  if [ "${SASREC:-1}" = 1 ]; then
    SEEDS=${MOL_SEEDS:-1,2,3} EPOCHS=61 screen beauty_sasrec_mol_best experiment=amazon_beauty_sasrec_mol \
      model.similarity.item_dropout=0.3 "${setting[@]}"
    SEEDS=${MOL_SEEDS:-1,2,3} EPOCHS=61 screen beauty_sasrec_dot experiment=amazon_beauty_sasrec_dot
  fi
  if [ "${BSAREC:-1}" = 1 ]; then
    SEEDS=1,2,3 screen beauty_bsarec_dot experiment=amazon_beauty_bsarec_dot
  fi
  if [ "${BSAREC_MOL:-0}" = 1 ]; then
    SEEDS=1,2,3 screen beauty_bsarec_mol_best experiment=amazon_beauty_bsarec_mol \
      model.similarity.item_dropout=0.3 "${setting[@]}"
  fi
}

round_main "$@"
