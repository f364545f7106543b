#!/usr/bin/env bash
# GPU round 19 (after round 18), on one H200 (kind nvidia-h200), calls chained within 30 s:
#
#   start   : fifteen Amazon Beauty trainings (HSTU-large in fp32 for 41 epochs, SASRec for 61), seed 1 unless said.
#             Round 18 (docs/screens/2026-12-01-round18.md, docs/mol_investigation.md §0.11): HSTU-large + residual
#             8x4x64 MoL with the gating dropouts is 0.99x / 0.97x of HSTU-large + dot over two seeds (.0923 / .0511
#             vs .0933 / .0525), peaks at epochs 14-19 against the dot head's 34 and ends at a lower training loss
#             (2.43 vs 2.84): it over-fits before the encoder and item table are as good as the dot head's. Head
#             weight decay 1 (.0923 / .0513) and gating dropouts 0.5 (.0910 / .0518, best epoch 34) are the two
#             single changes that held it level; 10, item dropout 0.5, 4x2x64, identity 8x1x64 and the plain
#             8x8x32 head are lower. New since round 18: `model.dot_loss_weight` (rails.models.losses.dot_auxiliary):
#             the dot head's own sampled softmax (cos(query, raw item) / 0.05, same negatives) added to the MoL
#             loss, so the encoder and the item table train as under the dot head while the MoL head ranks. So:
#             HSTU-large + residual 8x4x64 gd with dot-loss weight 1 (seeds 1, 2), 0.3 and 3; weight 1 with head
#             weight decay 1 / 10, gating dropouts 0.5, item dropout 0.5, at 4x2x64; the plain 8x8x32 gd head with
#             it; gating dropouts 0.5 + head weight decay 1 without it (round 18's two best changes together); the
#             HSTU-large dot head with seed 3 (rounds 18-19: three seeds). SASRec: dot, residual gd + head weight
#             decay 10 and the 8x8x32 gd head, each with dot-loss weight 1.
#   wait    : `wait 560` until "sweeps still running: 0" (~16 min); the call that sees the last training end also
#             runs `usage` when it has 45 s left.
#   usage   : if that wait had no time left for it (~1 min, the device's CPU).
#   topk    : the docs/bench_topk.md grid (round 18's run stopped part-way after 3 of its 7 problems in ~10 min:
#             results/profiles/2026-12-01-h200-round18-bench-topk-partial.*). On two GPUs (kind nvidia-h200-x2) `start`
#             runs it on GPU 0 at once, beside the trainings on GPU 1 (TOPK_BESIDE: this round's residual checkpoint is
#             its last problem, benchmarked once the training names it), and every `wait` brings bench_topk.* back
#             first. On one GPU: `topk r19_beauty_hstu_large_mol_residual_8x4x64_gd_dl_1` after the trainings, if the
#             session has >= 20 min left, else first in the session after. Complete -> copy the three files to docs/
#             verbatim and re-read docs/benchmarks.md's prose.
#
#   here first: .whl/ (scripts/gpu_wheels.sh), .devdata/ with amazon-beauty (../shared/data)
#   run(kind="nvidia-h200-x2", carry=[".whl", ".devdata"], command="bash scripts/ablations/round19.sh start")
#   (refused: kind="nvidia-h200"), then `wait 560` until "sweeps still running: 0" and the top-k benchmark is done
#   (+ `usage` if its table is missing: on two GPUs the waits are spent on the benchmark)
#
# Here afterwards: `python scripts/ingest_runs.py <files_at>/runs.tar.gz results/runs/<date>-<kind>-round19
# --strip-prefix r19_`, scripts/make_results.py, `python scripts/screen_report.py results/runs/<date>-<kind>-round19
# --reference beauty_hstu_large_dot_fp32 --only hstu --epochs 4 9 19 29 39 --out docs/screens/<date>-round19.md` (and
# --reference beauty_sasrec_dot --only sasrec --epochs 4 9 19 39 59 --out docs/screens/<date>-round19-sasrec.md), the
# reading into docs/mol_investigation.md (mol_pair_usage.* -> results/studies/<date>-<kind>-round19-pair-usage.*);
# a MoL setting at or above the dot head -> `MOL_SETTING='...' bash scripts/ablations/round15.sh start` (3 seeds).
ROUND=r19
EPOCHS=${EPOCHS:-41}
TOPK_BESIDE=${TOPK_BESIDE-r19_beauty_hstu_large_mol_residual_8x4x64_gd_dl_1}  # two GPUs: the benchmark beside them
# shellcheck source=round_steps.sh
source "$(dirname "$0")/round_steps.sh"

trainings() {  # HSTU-large residual MoL with the dot head's loss beside it, against the dot head, on $TRAIN_GPU
  local hstu=(experiment=amazon_beauty_hstu_large_mol trainer.precision=32-true model.similarity.item_dropout=0.3)
  local sasrec=(experiment=amazon_beauty_sasrec_mol model.similarity.item_dropout=0.3)
  local gating=(model.similarity.gating_item_dropout=0.3 model.similarity.gating_qi_dropout=0.2)
  local gating5=(model.similarity.gating_item_dropout=0.5 model.similarity.gating_qi_dropout=0.5)
  local res84=(model.similarity.residual_components=true model.similarity.component_dim=64
    model.similarity.num_query_components=8 model.similarity.num_item_components=4)
  SEEDS=3 screen beauty_hstu_large_dot_fp32 experiment=amazon_beauty_hstu_large_dot trainer.precision=32-true
  SEEDS=1,2 screen beauty_hstu_large_mol_residual_8x4x64_gd_dl_1 "${hstu[@]}" "${res84[@]}" "${gating[@]}" \
    model.dot_loss_weight=1.0
  screen beauty_hstu_large_mol_residual_8x4x64_gd_dl_0.3 "${hstu[@]}" "${res84[@]}" "${gating[@]}" \
    model.dot_loss_weight=0.3
  screen beauty_hstu_large_mol_residual_8x4x64_gd_dl_3 "${hstu[@]}" "${res84[@]}" "${gating[@]}" \
    model.dot_loss_weight=3.0
  screen beauty_hstu_large_mol_residual_8x4x64_gd_dl_1_head_wd_1 "${hstu[@]}" "${res84[@]}" "${gating[@]}" \
    model.dot_loss_weight=1.0 model.head_weight_decay=1.0
  screen beauty_hstu_large_mol_residual_8x4x64_gd_dl_1_head_wd_10 "${hstu[@]}" "${res84[@]}" "${gating[@]}" \
    model.dot_loss_weight=1.0 model.head_weight_decay=10.0
  screen beauty_hstu_large_mol_residual_8x4x64_gd_0.5_dl_1 "${hstu[@]}" "${res84[@]}" "${gating5[@]}" \
    model.dot_loss_weight=1.0
  screen beauty_hstu_large_mol_residual_8x4x64_gd_dl_1_item_dropout_0.5 "${hstu[@]}" "${res84[@]}" "${gating[@]}" \
    model.dot_loss_weight=1.0 model.similarity.item_dropout=0.5
  screen beauty_hstu_large_mol_residual_4x2x64_gd_dl_1 "${hstu[@]}" model.similarity.residual_components=true \
    model.similarity.component_dim=64 model.similarity.num_query_components=4 model.similarity.num_item_components=2 \
    "${gating[@]}" model.dot_loss_weight=1.0
  screen beauty_hstu_large_mol_8x8x32_gd_dl_1 "${hstu[@]}" "${gating[@]}" model.dot_loss_weight=1.0
  screen beauty_hstu_large_mol_residual_8x4x64_gd_0.5_head_wd_1 "${hstu[@]}" "${res84[@]}" "${gating5[@]}" \
    model.head_weight_decay=1.0
  EPOCHS=61 screen beauty_sasrec_dot experiment=amazon_beauty_sasrec_dot
  EPOCHS=61 screen beauty_sasrec_mol_residual_8x4x64_gd_head_wd_10_dl_1 "${sasrec[@]}" "${res84[@]}" "${gating[@]}" \
    model.head_weight_decay=10.0 model.dot_loss_weight=1.0
  EPOCHS=61 screen beauty_sasrec_mol_8x8x32_gd_dl_1 "${sasrec[@]}" "${gating[@]}" model.dot_loss_weight=1.0
}

round_main "$@"
