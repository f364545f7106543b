#!/usr/bin/env bash
# GPU round 16 (after round 14; round 15 is the 3-seed script that waits for this round's winner), on one H200
# (kind nvidia-h200), calls chained within 30 s:
#
#   start   : eighteen Amazon Beauty trainings (61 epochs, seed 1 unless said), the test of round 14's reading.
#             Round 14 (docs/screens/2026-12-01-round14.md) left every MoL screen 10-23 % under SASRec + dot in
#             NDCG@10, and the one-component head 1x1x64 (no mixture: LayerNorm query, GeGLU query MLP, item
#             projection, cosine / tau) as far under as the full 8x8x32: the loss is in MoL's learned component
#             maps, not in its mixture, while the dot head's cosine of the raw embeddings wins on Beauty's sparse
#             items. `model.similarity.identity_components=true` puts that cosine into the mixture as pair 0
#             (component 0 of each side is the embedding itself; needs component_dim = item_dim = 64, so 8x4x64
#             or smaller). Screens: the identity head at 1x1x64 (the dot head's logit on LayerNorm-ed queries,
#             softmax dropout off: the control), 8x4x64, 8x4x64 with the gating dropouts (round 14's best
#             one-change screen), 4x2x64, item dropout 0.1, the MI load-balancing loss off (it pushes weight away
#             from any one pair), softmax dropout off (it drops pair 0 too), L2 query normalisation (pair 0 then
#             is exactly the dot head's logit), tau_MoL 0.1 (0.05 everywhere so far), pair 0's gate biased at
#             initialisation (model.similarity.identity_gate_bias=5); round 14's 1x1x64 without
#             softmax dropout (its only pair was dropped 20 % of the time); SASRec + dot and round 14's
#             gating-dropout MoL with seeds 1 and 2 (the seed noise of the comparison); HSTU-large + dot and +
#             identity MoL in fp32 at the same 61 epochs; BSARec + identity MoL (41 epochs; BSARec + dot peaked
#             at epochs 21-23 in round 12).
#   wait    : `wait 560` until "sweeps still running: 0" (~20 min: round 14's eighteen SASRec jobs took 17.5).
#   usage   : then (~1 min, the device's CPU): scripts/mol_pair_usage.py over each MoL sweep's job-0 checkpoint,
#             $OUT/mol_pair_usage.{json,md}: does the gating lean on pair 0, the dot head's logit?
#   bench   : then, if 3 min are left (round_steps.sh; it now stops the trainings' MPS daemon first): issue #13
#             item 4 again, round 14's eager ratio 1.16 was measured through that daemon.
#
#   here first: .whl/ (scripts/gpu_wheels.sh), .devdata/ with amazon-beauty (../shared/data)
#   run(kind="nvidia-h200", carry=[".whl", ".devdata"], command="bash scripts/ablations/round16.sh start"), then
#   `wait 560` until "sweeps still running: 0"
#
# Here afterwards: `python scripts/ingest_runs.py <files_at>/runs.tar.gz results/runs/<date>-<kind>-round16
# --strip-prefix r16_`, scripts/make_results.py, `python scripts/screen_report.py results/runs/<date>-<kind>-round16
# --reference beauty_sasrec_dot --epochs 4 9 19 39 59 --out docs/screens/<date>-round16.md`, the reading into
# docs/mol_investigation.md (mol_pair_usage.* -> results/studies/<date>-<kind>-round16-pair-usage.*); the best
# MoL setting -> `MOL_SETTING='...' bash scripts/ablations/round15.sh start`.
ROUND=r16
EPOCHS=${EPOCHS:-61}
# shellcheck source=round_steps.sh
source "$(dirname "$0")/round_steps.sh"

trainings() {  # MoL with the dot head's logit as a component, detached on $TRAIN_GPU
  local mol=(experiment=amazon_beauty_sasrec_mol model.similarity.item_dropout=0.3)
  local gating=(model.similarity.gating_item_dropout=0.3 model.similarity.gating_qi_dropout=0.2)
  local identity=(model.similarity.identity_components=true model.similarity.component_dim=64)
  local ident84=("${identity[@]}" model.similarity.num_query_components=8 model.similarity.num_item_components=4)
  SEEDS=1,2 screen beauty_sasrec_dot experiment=amazon_beauty_sasrec_dot
  SEEDS=1,2 screen beauty_sasrec_mol_gating_dropout "${mol[@]}" "${gating[@]}"
  screen beauty_sasrec_mol_1x1x64_no_softmax_dropout "${mol[@]}" model.similarity.num_query_components=1 \
    model.similarity.num_item_components=1 model.similarity.component_dim=64 model.similarity.softmax_dropout=0.0
  screen beauty_sasrec_mol_identity_1x1x64 "${mol[@]}" "${identity[@]}" model.similarity.num_query_components=1 \
    model.similarity.num_item_components=1 model.similarity.softmax_dropout=0.0
  screen beauty_sasrec_mol_identity_8x4x64 "${mol[@]}" "${ident84[@]}"
  screen beauty_sasrec_mol_identity_8x4x64_gd "${mol[@]}" "${ident84[@]}" "${gating[@]}"
  screen beauty_sasrec_mol_identity_4x2x64_gd "${mol[@]}" "${identity[@]}" model.similarity.num_query_components=4 \
    model.similarity.num_item_components=2 "${gating[@]}"
  screen beauty_sasrec_mol_identity_8x4x64_gd_item_dropout_0.1 "${mol[@]}" "${ident84[@]}" "${gating[@]}" \
    model.similarity.item_dropout=0.1
  screen beauty_sasrec_mol_identity_8x4x64_gd_no_mi "${mol[@]}" "${ident84[@]}" "${gating[@]}" \
    model.similarity.mi_loss_weight=0.0
  # softmax dropout drops pair 0 too (20 % of the (query, item) scores lose the dot logit in training)
  screen beauty_sasrec_mol_identity_8x4x64_gd_no_softmax_dropout "${mol[@]}" "${ident84[@]}" "${gating[@]}" \
    model.similarity.softmax_dropout=0.0
  screen beauty_sasrec_mol_identity_8x4x64_gd_query_l2 "${mol[@]}" "${ident84[@]}" "${gating[@]}" \
    model.similarity.query_norm=l2
  screen beauty_sasrec_mol_identity_8x4x64_gd_tau_0.1 "${mol[@]}" "${ident84[@]}" "${gating[@]}" \
    model.similarity.temperature=0.1
  # pair 0's gate logit +5 at initialisation: the mixture starts on the dot head's logit (about 60 % of the
  # weight at 8x4x64 on random inputs, tests/test_mol_identity.py), as the dot head would, and learns from there
  screen beauty_sasrec_mol_identity_8x4x64_gd_gate_bias_5 "${mol[@]}" "${ident84[@]}" "${gating[@]}" \
    model.similarity.identity_gate_bias=5.0
  screen beauty_hstu_large_dot_fp32 experiment=amazon_beauty_hstu_large_dot trainer.precision=32-true
  screen beauty_hstu_large_mol_identity_8x4x64_gd experiment=amazon_beauty_hstu_large_mol trainer.precision=32-true \
    model.similarity.item_dropout=0.3 "${ident84[@]}" "${gating[@]}"
  # BSARec + dot (.0932 / .0539 in round 12, best at epoch 21-23) is the best NDCG@10 of rails on Beauty; its MoL
  # counterpart for 41 epochs (one example per training target: the slowest job of the round)
  EPOCHS=41 screen beauty_bsarec_mol_identity_8x4x64_gd experiment=amazon_beauty_bsarec_mol \
    model.similarity.item_dropout=0.3 "${ident84[@]}" "${gating[@]}"
}

round_main "$@"
