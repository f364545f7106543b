#!/usr/bin/env bash
# GPU round 20 (after rounds 19 and 15), on one H200 (kind nvidia-h200), calls chained within 30 s:
#
#   start   : twelve trainings at once. Round 19 + round 15 (docs/mol_investigation.md §0.12): on Amazon Beauty the
#             dot head's own loss beside the MoL loss (`model.dot_loss_weight=1.0`) puts HSTU-large + MoL 8x8x32
#             with the gating dropouts at 1.072x / 1.047x of HSTU-large + dot over three seeds (.0998 / .0549 vs
#             .0931 / .0524). Does it lift the ML-1M row too (issue #12's bar: HSTU-large + MoL >= .3412 / .1979,
#             now .3216 / .1830 with item dropout 0.3)? ML-1M, paper protocol, 101 epochs: the HSTU-large + MoL
#             preset with dot-loss weight 1 and the item-dropout-0.3 preset with it, seeds 1-3 each. Beauty
#             (HSTU-large fp32 and BSARec 41 epochs): the round-19 head with dot-loss weight 3 and with head weight
#             decay 1, BSARec + that MoL head (round 12's BSARec + dot, 101 epochs: .0932 / .0539, the best
#             published row is BSARec's .1008 / .0611) and BSARec + dot at 41 epochs; SASRec + that MoL head and
#             SASRec + dot at 101 epochs (the MoL head was still improving at epoch 59 of 61).
#   wait    : `wait 560` until "sweeps still running: 0" (~15-20 min: six 101-epoch ML-1M trainings).
#   usage   : if that wait had no time left for it (~1 min, the device's CPU).
#   profile : after the trainings (issue #13 item 1): the GPU test of the running top-k with merged tiles sorted in
#             several at a time, and scripts/profile_fused_exact.py's grid of 1, 4 and 16 tiles per sort at 1M and 10M
#             items (<= 9 min; round_steps.sh). Faster -> that `merge_tiles` default in fused_mol_topk, then `topk`.
#   topk    : the docs/bench_topk.md grid (issue #13; round 18's run stopped after 3 of its 7 problems):
#             `topk r20_beauty_hstu_large_mol_8x8x32_gd_dl_3` after the trainings with >= 20 min left, else first
#             in the session after.
#
#   here first: .whl/ (scripts/gpu_wheels.sh), .devdata/ with ml-1m-seq and amazon-beauty (../shared/data)
#   run(kind="nvidia-h200", carry=[".whl", ".devdata"], command="bash scripts/ablations/round20.sh start"),
#   then `wait 560` until "sweeps still running: 0", then `profile` (if >= 9 min are left)
#
# Here afterwards: `python scripts/ingest_runs.py <files_at>/runs.tar.gz results/runs/<date>-<kind>-round20
# --strip-prefix r20_`, scripts/make_results.py (the ML-1M rows join results.md's MoL-vs-dot table against the
# preset dot rows), `python scripts/screen_report.py results/runs/<date>-<kind>-round20 --reference beauty_bsarec_dot
# --only beauty_hstu beauty_bsarec --epochs 4 9 19 29 39 --out docs/screens/<date>-round20.md` (and --reference
# beauty_sasrec_dot --only beauty_sasrec --epochs 4 9 19 59 99 --out docs/screens/<date>-round20-sasrec.md), the reading into docs/mol_investigation.md (mol_pair_usage.* ->
# results/studies/<date>-<kind>-round20-pair-usage.*).
ROUND=r20
EPOCHS=${EPOCHS:-41}
# shellcheck source=round_steps.sh
source "$(dirname "$0")/round_steps.sh"

trainings() {  # the dot loss on ML-1M (3 seeds) and the Beauty MoL head of rounds 19 / 15 pushed further
  local head=(model.similarity.item_dropout=0.3 model.similarity.gating_item_dropout=0.3
    model.similarity.gating_qi_dropout=0.2)
  local beauty=(trainer.precision=32-true "${head[@]}")  # HSTU-large in fp32 as its dot rows (rounds 17-19)
  SEEDS=1,2,3 EPOCHS=101 screen ml1m_hstu_large_mol_dl_1 experiment=ml_1m_seq_hstu_large_mol \
    model.dot_loss_weight=1.0
  SEEDS=1,2,3 EPOCHS=101 screen ml1m_hstu_large_mol_item_dropout_0.3_dl_1 experiment=ml_1m_seq_hstu_large_mol \
    model.similarity.item_dropout=0.3 model.dot_loss_weight=1.0
  screen beauty_hstu_large_mol_8x8x32_gd_dl_3 experiment=amazon_beauty_hstu_large_mol "${beauty[@]}" \
    model.dot_loss_weight=3.0
  screen beauty_hstu_large_mol_8x8x32_gd_dl_1_head_wd_1 experiment=amazon_beauty_hstu_large_mol "${beauty[@]}" \
    model.dot_loss_weight=1.0 model.head_weight_decay=1.0
  screen beauty_bsarec_mol_8x8x32_gd_dl_1 experiment=amazon_beauty_bsarec_mol "${head[@]}" model.dot_loss_weight=1.0
  screen beauty_bsarec_dot experiment=amazon_beauty_bsarec_dot
  # SASRec + that MoL head was still rising at epoch 59 of 61 (round 15: val NDCG@10 .0561 vs the dot head's .0553)
  EPOCHS=101 screen beauty_sasrec_mol_8x8x32_gd_dl_1 experiment=amazon_beauty_sasrec_mol "${head[@]}" \
    model.dot_loss_weight=1.0
  EPOCHS=101 screen beauty_sasrec_dot experiment=amazon_beauty_sasrec_dot
}

round_main "$@"
