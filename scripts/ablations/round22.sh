#!/usr/bin/env bash
# GPU round 22 (after round 20), on one H200 (kind nvidia-h200), calls chained within 30 s:
#
#   start   : nine trainings at once. Round 20 (docs/mol_investigation.md §0.13): on ML-1M the dot head's loss
#             leaves the best HSTU-large + MoL row where it was (.3228 / .1838 with item dropout 0.3, 1.037x /
#             1.039x the dot head; issue #12's absolute bar is .3412 / .1979), and on Beauty SASRec + MoL with the
#             gating dropouts and dot-loss weight 1 tested 1.075x / 1.043x SASRec + dot at 101 epochs over one seed.
#             ML-1M, paper protocol, 101 epochs, seeds 1-3: the Beauty head recipe on the ML-1M preset head (item
#             dropout 0.3, gating dropouts 0.3 / 0.2, dot loss 1: the gating dropouts are untried on ML-1M).
#             Beauty: SASRec + that MoL head and SASRec + dot at 101 epochs, seeds 2 and 3 (round 20 ran seed 1:
#             the three-seed rows of results.md), and the best Beauty row's recipe (HSTU-large + MoL 8x8x32, fp32,
#             41 epochs) at seeds 4 and 5, for their checkpoints (below). Not here: BSARec + MoL at 101 epochs (BSARec's
#             one-example-per-target epochs ran at about one a minute beside the others in round 20: an hour).
#   wait    : `wait 560` until "sweeps still running: 0" (~20 min: HSTU-large at 41 and 101 epochs; the last wait
#             runs `usage`). It also brings back ckpts.tar.gz: the best checkpoints of job 0 of the ML-1M Beauty-recipe
#             MoL sweep (8x4x64), of SASRec + MoL and of HSTU-large + MoL on Beauty (8x8x32), without their training
#             state (~4 MB each): the trained-model problems of the next session's `round20.sh topk` (issue #13
#             item 3), and trained models to study here on the CPU.
#
#   cosine  : after the last `wait` (~2 min): each MoL + dot-loss run's best checkpoint ranked by the cosine its dot
#             loss trained, alone and added to MoL (rails-eval with rails.models.similarity.mol_cosine.MoLWithCosine):
#             is the MoL win on Beauty MoL's, or the dot loss's? $OUT/cosine_eval.json (here:
#             scripts/cosine_eval_report.py -> results/studies/<date>-<kind>-round22-cosine.{md,json}).
#
#   here first: .whl/ (scripts/gpu_wheels.sh), .devdata/ with ml-1m-seq and amazon-beauty (../shared/data)
#   run(kind="nvidia-h200", carry=[".whl", ".devdata"], command="bash scripts/ablations/round22.sh start"),
#   then `gpu-tests` (the whole GPU suite beside the trainings: its last full run was round 8's; results/gpu_tests/),
#   then `wait 560` until "sweeps still running: 0"
#
# Here afterwards: `mkdir -p .devdata && tar -xzf <files_at>/ckpts.tar.gz -C .devdata` (git-ignored; carried by
# the next session's `round20.sh topk .devdata/ckpts/r22_*/0.ckpt`), `python scripts/ingest_runs.py
# <files_at>/runs.tar.gz results/runs/<date>-<kind>-round22 --strip-prefix r22_`, scripts/make_results.py (the
# SASRec rows join round 20's seed 1 in results.md), `python scripts/screen_report.py
# results/runs/<date>-<kind>-round22 --reference beauty_sasrec_dot --only beauty_sasrec beauty_hstu --epochs 4 9
# 19 39 99 --out docs/screens/<date>-round22.md`, the reading into docs/mol_investigation.md (mol_pair_usage.* ->
# results/studies/<date>-<kind>-round22-pair-usage.*).
ROUND=r22
EPOCHS=${EPOCHS:-101}
# the trained models the top-k benchmark of a later session reads (scripts/gpu_sweep.sh collects them on `wait`)
export COLLECT_CKPT=${COLLECT_CKPT:-1}
export COLLECT_CKPT_GLOB=${COLLECT_CKPT_GLOB:-'r22_@(ml1m_hstu_large_mol_gd_dl_1|beauty_*_mol_8x8x32_gd_dl_1)/0'}
# shellcheck source=round_steps.sh
source "$(dirname "$0")/round_steps.sh"

trainings() {  # the Beauty head recipe on ML-1M; SASRec + MoL at 101 epochs to three seeds; best-row seeds 4-5
  local head=(model.similarity.item_dropout=0.3 model.similarity.gating_item_dropout=0.3
    model.similarity.gating_qi_dropout=0.2)
  SEEDS=1,2,3 screen ml1m_hstu_large_mol_gd_dl_1 experiment=ml_1m_seq_hstu_large_mol "${head[@]}" \
    model.dot_loss_weight=1.0
  SEEDS=2,3 screen beauty_sasrec_mol_8x8x32_gd_dl_1 experiment=amazon_beauty_sasrec_mol "${head[@]}" \
    model.dot_loss_weight=1.0
  SEEDS=2,3 screen beauty_sasrec_dot experiment=amazon_beauty_sasrec_dot
  # the 3-seed best Beauty row (round 19 / 15: seeds 1-3), its command as README's: two more seeds
  SEEDS=4,5 EPOCHS=41 screen beauty_hstu_large_mol_8x8x32_gd_dl_1 experiment=amazon_beauty_hstu_large_mol \
    trainer.precision=32-true "${head[@]}" model.dot_loss_weight=1.0
}

round_main "$@"
