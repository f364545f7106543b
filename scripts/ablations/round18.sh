#!/usr/bin/env bash
# GPU round 18 (after round 17), on one H200 (kind nvidia-h200), calls chained within 30 s:
#
#   start   : fifteen Amazon Beauty trainings (HSTU-large in fp32 for 41 epochs: its best epochs are 14-34 in rounds
#             16-17; SASRec for 61), seed 1 unless said. Round 17 (docs/screens/2026-12-01-round17.md,
#             docs/mol_investigation.md §0.10): residual components (every component the embedding plus a learned
#             map starting at zero) test under the plain MoL head with SASRec (.0698-.0757 vs .0801 for the
#             gating-dropout 8x8x32) but give the closest MoL row yet with HSTU-large: .0918 / .0513 against
#             HSTU-large + dot's .0935 / .0532 (round 16), with a best epoch of 14 (it over-fits early) and its
#             query maps moved less from the embeddings than SASRec's (relative norm 0.93 vs 2.3-3.6); head weight
#             decay 1.0 was the best SASRec residual screen (.0757: the maps held near the dot head). So: HSTU-large
#             + dot and + residual 8x4x64 with the gating dropouts, seeds 1 and 2 each (the comparison that decides);
#             the residual head with head weight decay 1 and 10, item dropout 0.5, gating dropouts 0.5, at 4x2x64;
#             the identity 8x1x64 head (the item side is the embedding alone: the item table learns only through
#             cosines, as under the dot head; the query side keeps 8 components); the plain 8x8x32 head with the
#             gating dropouts. SASRec: dot (the round's SASRec reference), residual + head weight decay 10,
#             identity 8x1x64 with the gating dropouts, the gating-dropout 8x8x32 in fp32 (bf16 in round 16: .0801).
#             Every run evaluates in float32 (since 9148e48; results/studies/2026-12-01-h200-eval-precision.md).
#   wait    : `wait 560` until "sweeps still running: 0" (~16 min); the call that sees the last training end also
#             runs `usage` (gating weights and residual deviation of each MoL run) when it has 45 s left.
#   usage   : if that wait had no time left for it (~1 min, the device's CPU).
#   topk    : then, if 14 min are left: `topk r18_beauty_hstu_large_mol_residual_8x4x64_gd` (round_steps.sh): the
#             docs/bench_topk.md grid with the autotuner's new 8x8 / 4-warp candidate (round 17's block grid) and this
#             round's HSTU-large residual MoL checkpoint as the trained-model problem, detached (~12 min); `wait 560`
#             brings back bench_topk.{json,md,png}: copy them to docs/ verbatim, re-read docs/benchmarks.md's prose.
#
#   here first: .whl/ (scripts/gpu_wheels.sh), .devdata/ with amazon-beauty (../shared/data)
#   run(kind="nvidia-h200", carry=[".whl", ".devdata"], command="bash scripts/ablations/round18.sh start"), then
#   `wait 560` until "sweeps still running: 0" (+ `usage` if its table is missing)
#
# Here afterwards: `python scripts/ingest_runs.py <files_at>/runs.tar.gz results/runs/<date>-<kind>-round18
# --strip-prefix r18_`, scripts/make_results.py, `python scripts/screen_report.py results/runs/<date>-<kind>-round18
# --reference beauty_hstu_large_dot_fp32 --epochs 4 9 19 29 39 --out docs/screens/<date>-round18.md` (and with
# --reference beauty_sasrec_dot --only sasrec for the SASRec rows), the reading into docs/mol_investigation.md
# (mol_pair_usage.* -> results/studies/<date>-<kind>-round18-pair-usage.*); a MoL setting at or above the dot head
# -> `MOL_SETTING='...' bash scripts/ablations/round15.sh start` (3 seeds).
ROUND=r18
EPOCHS=${EPOCHS:-41}
# shellcheck source=round_steps.sh
source "$(dirname "$0")/round_steps.sh"

trainings() {  # HSTU-large residual MoL against its dot head, detached on $TRAIN_GPU
  local hstu=(experiment=amazon_beauty_hstu_large_mol trainer.precision=32-true model.similarity.item_dropout=0.3)
  local sasrec=(experiment=amazon_beauty_sasrec_mol model.similarity.item_dropout=0.3)
  local gating=(model.similarity.gating_item_dropout=0.3 model.similarity.gating_qi_dropout=0.2)
  local res84=(model.similarity.residual_components=true model.similarity.component_dim=64
    model.similarity.num_query_components=8 model.similarity.num_item_components=4)
  local id81=(model.similarity.identity_components=true model.similarity.component_dim=64
    model.similarity.num_query_components=8 model.similarity.num_item_components=1)
  SEEDS=1,2 screen beauty_hstu_large_dot_fp32 experiment=amazon_beauty_hstu_large_dot trainer.precision=32-true
  SEEDS=1,2 screen beauty_hstu_large_mol_residual_8x4x64_gd "${hstu[@]}" "${res84[@]}" "${gating[@]}"
  screen beauty_hstu_large_mol_residual_8x4x64_gd_head_wd_1 "${hstu[@]}" "${res84[@]}" "${gating[@]}" \
    model.head_weight_decay=1.0
  screen beauty_hstu_large_mol_residual_8x4x64_gd_head_wd_10 "${hstu[@]}" "${res84[@]}" "${gating[@]}" \
    model.head_weight_decay=10.0
  screen beauty_hstu_large_mol_residual_8x4x64_gd_item_dropout_0.5 "${hstu[@]}" "${res84[@]}" "${gating[@]}" \
    model.similarity.item_dropout=0.5
  screen beauty_hstu_large_mol_residual_8x4x64_gd_0.5 "${hstu[@]}" "${res84[@]}" \
    model.similarity.gating_item_dropout=0.5 model.similarity.gating_qi_dropout=0.5
  screen beauty_hstu_large_mol_residual_4x2x64_gd "${hstu[@]}" model.similarity.residual_components=true \
    model.similarity.component_dim=64 model.similarity.num_query_components=4 model.similarity.num_item_components=2 \
    "${gating[@]}"
  screen beauty_hstu_large_mol_identity_8x1x64_gd "${hstu[@]}" "${id81[@]}" "${gating[@]}"
  screen beauty_hstu_large_mol_8x8x32_gd "${hstu[@]}" "${gating[@]}"
  EPOCHS=61 screen beauty_sasrec_dot experiment=amazon_beauty_sasrec_dot
  EPOCHS=61 screen beauty_sasrec_mol_residual_8x4x64_gd_head_wd_10 "${sasrec[@]}" "${res84[@]}" "${gating[@]}" \
    model.head_weight_decay=10.0
  EPOCHS=61 screen beauty_sasrec_mol_identity_8x1x64_gd "${sasrec[@]}" "${id81[@]}" "${gating[@]}"
  EPOCHS=61 screen beauty_sasrec_mol_8x8x32_gd_fp32 "${sasrec[@]}" "${gating[@]}" model.similarity.autocast_bf16=false
}

round_main "$@"
