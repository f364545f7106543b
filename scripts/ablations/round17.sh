#!/usr/bin/env bash
# GPU round 17 (after round 16), on one H200 (kind nvidia-h200), calls chained within 30 s:
#
#   start   : sixteen Amazon Beauty trainings (61 epochs, seed 1 unless said). Round 16
#             (docs/screens/2026-12-01-round16.md, docs/mol_investigation.md §0.9) left two readings to test:
#             (a) the identity head at 1x1x64, which computes the dot head's function, still tests 5 % under
#             SASRec + dot (.0463 vs .0489); what is left between them is the bf16 autocast of the MoL preset and
#             its LayerNorm query normalisation: 1x1x64 with the head in fp32, and in fp32 with L2 (that one is
#             the dot head's training, through MoL's code: it should match the dot row);
#             (b) every learned component map costs on Beauty and the gating ignores a fixed dot-head pair (pair 0
#             under 1/32 of the weight). `model.similarity.residual_components=true` (new) makes every component
#             the embedding plus a learned map that starts at zero: the untrained head is the dot head, and the
#             head's weight decay (model.head_weight_decay) now pulls toward it, not toward zero maps. Screens:
#             residual 1x1x64 / 8x4x64 / 8x4x64 with the gating dropouts (seeds 1, 2) / + head weight decay 0.1
#             and 1.0 / + fp32 head / + L2 query norm / 4x2x64 / item dropout 0.1 / with an identity pair 0;
#             SASRec + dot (the round's reference); HSTU-large + residual MoL in fp32.
#   wait    : `wait 560` until "sweeps still running: 0" (~18 min); the call that sees the last training end
#             also runs `usage` (the gating weights of each MoL run, round_steps.sh) when it has 45 s left.
#   usage   : if that wait had no time left for it (~1 min, the device's CPU).
#   profile : then, if 9 min are left: the fused exact kernel's block grid (round_steps.sh).
#
#   here first: .whl/ (scripts/gpu_wheels.sh), .devdata/ with amazon-beauty (../shared/data)
#   run(kind="nvidia-h200", carry=[".whl", ".devdata"], command="bash scripts/ablations/round17.sh start"), then
#   `wait 560` until "sweeps still running: 0" (+ `usage` if its table is missing), then `profile`
#
# Here afterwards: `python scripts/ingest_runs.py <files_at>/runs.tar.gz results/runs/<date>-<kind>-round17
# --strip-prefix r17_`, scripts/make_results.py, `python scripts/screen_report.py results/runs/<date>-<kind>-round17
# --reference beauty_sasrec_dot --epochs 4 9 19 39 59 --out docs/screens/<date>-round17.md`, the reading into
# docs/mol_investigation.md (mol_pair_usage.* -> results/studies/<date>-<kind>-round17-pair-usage.*); the best
# MoL setting -> `MOL_SETTING='...' bash scripts/ablations/round15.sh start`.
ROUND=r17
EPOCHS=${EPOCHS:-61}
# shellcheck source=round_steps.sh
source "$(dirname "$0")/round_steps.sh"

trainings() {  # MoL components that start as the dot head's, detached on $TRAIN_GPU
  local mol=(experiment=amazon_beauty_sasrec_mol model.similarity.item_dropout=0.3)
  local gating=(model.similarity.gating_item_dropout=0.3 model.similarity.gating_qi_dropout=0.2)
  local one=(model.similarity.num_query_components=1 model.similarity.num_item_components=1
    model.similarity.component_dim=64 model.similarity.softmax_dropout=0.0)
  local identity=(model.similarity.identity_components=true)
  local res84=(model.similarity.residual_components=true model.similarity.component_dim=64
    model.similarity.num_query_components=8 model.similarity.num_item_components=4)
  screen beauty_sasrec_dot experiment=amazon_beauty_sasrec_dot
  # (a) the identity 1x1x64 head is the dot head's function: what is left is the preset's bf16 head and LayerNorm
  screen beauty_sasrec_mol_identity_1x1x64_fp32 "${mol[@]}" "${one[@]}" "${identity[@]}" \
    model.similarity.autocast_bf16=false
  screen beauty_sasrec_mol_identity_1x1x64_fp32_l2 "${mol[@]}" "${one[@]}" "${identity[@]}" \
    model.similarity.autocast_bf16=false model.similarity.query_norm=l2
  # (b) residual components: every pair starts as the dot head's logit
  screen beauty_sasrec_mol_residual_1x1x64 "${mol[@]}" "${one[@]}" model.similarity.residual_components=true
  screen beauty_sasrec_mol_residual_8x4x64 "${mol[@]}" "${res84[@]}"
  SEEDS=1,2 screen beauty_sasrec_mol_residual_8x4x64_gd "${mol[@]}" "${res84[@]}" "${gating[@]}"
  screen beauty_sasrec_mol_residual_8x4x64_gd_head_wd_0.1 "${mol[@]}" "${res84[@]}" "${gating[@]}" \
    model.head_weight_decay=0.1
  screen beauty_sasrec_mol_residual_8x4x64_gd_head_wd_1 "${mol[@]}" "${res84[@]}" "${gating[@]}" \
    model.head_weight_decay=1.0
  screen beauty_sasrec_mol_residual_8x4x64_gd_fp32 "${mol[@]}" "${res84[@]}" "${gating[@]}" \
    model.similarity.autocast_bf16=false
  screen beauty_sasrec_mol_residual_8x4x64_gd_query_l2 "${mol[@]}" "${res84[@]}" "${gating[@]}" \
    model.similarity.query_norm=l2
  screen beauty_sasrec_mol_residual_4x2x64_gd "${mol[@]}" model.similarity.residual_components=true \
    model.similarity.component_dim=64 model.similarity.num_query_components=4 model.similarity.num_item_components=2 \
    "${gating[@]}"
  screen beauty_sasrec_mol_residual_8x4x64_gd_item_dropout_0.1 "${mol[@]}" "${res84[@]}" "${gating[@]}" \
    model.similarity.item_dropout=0.1
  screen beauty_sasrec_mol_residual_identity_8x4x64_gd "${mol[@]}" "${res84[@]}" "${gating[@]}" "${identity[@]}"
  screen beauty_hstu_large_mol_residual_8x4x64_gd experiment=amazon_beauty_hstu_large_mol trainer.precision=32-true \
    model.similarity.item_dropout=0.3 "${res84[@]}" "${gating[@]}"
}

round_main "$@"
