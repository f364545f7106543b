#!/usr/bin/env bash
# GPU round 14 (after round 12; x2_round13.sh is the ML-1M fused-mixing check, for a two-GPU machine), on one H200
# (kind nvidia-h200), calls chained within 30 s:
#
#   bench   : alone on the machine, first: bench_mol_step (round_steps.sh; <= 9 min; issue #13 item 4).
#   start   : eighteen Amazon Beauty trainings (SASRec, seed 1, 61 epochs: round 12's validation curves are flat
#             from about epoch 40), the diagnosis of issue #12's "MoL < dot on Beauty". Round 12 left every MoL
#             run 12-17 % under the dot product with the same encoder (SASRec .0761 vs .0868, HSTU-large .0829 vs
#             .0948, BSARec ~.050 vs .061 validation NDCG@10), and none of its one-change screens (precision,
#             dropouts, learning rate, schedule, positions) closed it; without its dropouts MoL fits the training
#             sequences better than the dot product (loss 2.73 vs 3.00) and its validation falls from epoch 29:
#             the head over-fits Beauty's sparse items (16 interactions each, vs 270 on ML-1M, where MoL wins).
#             The screens locate that capacity, one change each from round 11's SASRec + MoL (8x8x32, item
#             dropout 0.3): the component ladder 1x1x64 (the MoL machinery without a mixture: LayerNorm query,
#             GeGLU query MLP, item projection; also with a single Linear as query map) / 8x1x64 (mixture over
#             query components only) / 1x8x32 (over item components only) / 8x2x32 / 8x4x64 (the ML-1M head); the gating (item / query-item dropout); the
#             query side (MLP input dropout, a single Linear, hidden width 128, L2 instead of LayerNorm); the head's
#             own weight decay (model.head_weight_decay 0.1, 1.0); the item side (dropout 0.5, softmax dropout alone
#             off); 2,048 negatives; and SASRec + dot as the reference of the same round.
#   wait    : `wait 560` until "sweeps still running: 0" (~15 min).
#   profile : if time is left (round_steps.sh).
#
#   here first: .whl/ (scripts/gpu_wheels.sh), .devdata/ with amazon-beauty (../shared/data)
#   run(kind="nvidia-h200", carry=[".whl", ".devdata"], command="bash scripts/ablations/round14.sh bench"), then
#   `start`, then `wait 560` until "sweeps still running: 0"
#
# Here afterwards: bench_mol.* -> docs/ and results/bench_mol/<date>-<kind>-<commit>.*; `python
# scripts/ingest_runs.py <files_at>/runs.tar.gz results/runs/<date>-<kind>-round14 --strip-prefix r14_`,
# scripts/make_results.py, the screens into docs/mol_investigation.md; the setting that closes the gap -> 3 seeds,
# 101 epochs, with HSTU-large too.
ROUND=r14
EPOCHS=${EPOCHS:-61}
# shellcheck source=round_steps.sh
source "$(dirname "$0")/round_steps.sh"

trainings() {  # the Beauty MoL diagnosis, detached on $TRAIN_GPU
  screen beauty_sasrec_dot experiment=amazon_beauty_sasrec_dot
  local mol=(experiment=amazon_beauty_sasrec_mol model.similarity.item_dropout=0.3)
  screen beauty_sasrec_mol "${mol[@]}"
  # how many components, on which side
  local shape pq px dp
  for shape in 1x1x64 8x1x64 1x8x32 8x2x32 8x4x64; do
    IFS=x read -r pq px dp <<<"$shape"
    screen "beauty_sasrec_mol_$shape" "${mol[@]}" model.similarity.num_query_components="$pq" \
      model.similarity.num_item_components="$px" model.similarity.component_dim="$dp"
  done
  # the machinery at its smallest: one component each side, single Linear maps (dot product of LayerNorm-ed,
  # linearly mapped query and item: where MoL's transforms alone would lose to the plain dot product)
  screen beauty_sasrec_mol_1x1x64_linear "${mol[@]}" model.similarity.num_query_components=1 \
    model.similarity.num_item_components=1 model.similarity.component_dim=64 model.similarity.query_hidden_dim=0
  screen beauty_sasrec_mol_gating_dropout "${mol[@]}" model.similarity.gating_item_dropout=0.3 \
    model.similarity.gating_qi_dropout=0.2
  screen beauty_sasrec_mol_query_dropout "${mol[@]}" model.similarity.query_dropout=0.3
  screen beauty_sasrec_mol_query_linear "${mol[@]}" model.similarity.query_hidden_dim=0
  screen beauty_sasrec_mol_query_l2 "${mol[@]}" model.similarity.query_norm=l2
  screen beauty_sasrec_mol_query_hidden_128 "${mol[@]}" model.similarity.query_hidden_dim=128
  # the head's own AdamW weight decay (the encoder and item table keep the preset's 0)
  screen beauty_sasrec_mol_head_wd_0.1 "${mol[@]}" model.head_weight_decay=0.1
  screen beauty_sasrec_mol_head_wd_1 "${mol[@]}" model.head_weight_decay=1.0
  screen beauty_sasrec_mol_item_dropout_0.5 "${mol[@]}" model.similarity.item_dropout=0.5
  screen beauty_sasrec_mol_no_softmax_dropout "${mol[@]}" model.similarity.softmax_dropout=0.0
  screen beauty_sasrec_mol_neg2048 "${mol[@]}" model.negatives.num_negatives=2048
}

round_main "$@"
