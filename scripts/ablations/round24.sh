#!/usr/bin/env bash
# GPU round 24 (after round 23), on one H200 (kind nvidia-h200), calls chained within 30 s:
#
#   profile : first, alone on the machine (~7 min; issue #13):
#             PROFILE_ITEMS=1000000 PROFILE_LIMIT=300 PROFILE_MERGES=16 PROFILE_BLOCKS='4x32x8 4x16x8 2x64x8 2x32x8'
#             PROFILE_STEPS='1 2' bash scripts/ablations/round24.sh profile
#             Its GPU tests first (float64 references, now with two tiles per loop step), then two tiles per loop step
#             scored as independent chains (`fused_mol_topk(step_tiles=2)`, new: the search is latency-bound, one
#             8-warp program per SM, and a 128-register cap for a second program lost in round 23) against one tile
#             per step: the same pairs per step (4x16x8 x 2 vs 4x32x8 x 1, 2x32x8 x 2 vs 2x64x8 x 1) and the same
#             tiles (4x32x8, 2x64x8). Offline (sm_90, Triton 3.5.1) two tiles per step spill 16-152 B at the 8-warp
#             shapes against 8-16 B: results/profiles/2026-12-02-cpu-kernel-registers-8x4x64-merge16-step{1,2}.md.
#             Faster -> `step_tiles=2` joins the autotuner's configs (and the 10M profile of the session after).
#   start   : six trainings at once. Round 23 (docs/mol_investigation.md §0.15): trained and ranked by MoL + cosine
#             (`model/similarity_blend=cosine`), round 22's head recipe, now `model/mol_recipe=joint`, leads on both
#             datasets (ML-1M .3236 / .1856, Beauty HSTU-large .1007 / .0565, SASRec .0905 / .0512), and Beauty's best
#             published row (.1008 / .0611) is matched in HR@10, not in NDCG@10 (92.5 %).
#             - two recipes through the new config group (seed 1; their best checkpoints come back as ckpts.tar.gz,
#               without training state: trained-model problems of the next top-k benchmark, issue #13): Beauty
#               HSTU-large 8x8x32 (fp32, 41 epochs), Beauty SASRec 8x8x32 (101 epochs); the ML-1M one (101 epochs,
#               ~20 min) does not fit beside the profile: `ONLY=ml1m bash scripts/ablations/round24.sh start` when
#               a session has 22 min for it;
#             - Beauty HSTU-large screens for the NDCG@10 gap (seed 1, fp32, 41 epochs): MoL (joint + blend) and dot
#               with item_dim 128 (the Books preset's 64 so far), MoL with 2,048 negatives (512 so far), dot with the
#               full softmax over every item (BSARec's published loss; sampled 512 so far).
#   wait    : `wait 560` until "sweeps still running: 0" (~16 min; the last wait runs `usage`, which now reads the
#             blend runs' MoL part).
#
#   here first: .whl/ (scripts/gpu_wheels.sh), .devdata/ with ml-1m-seq and amazon-beauty (../shared/data)
#   run(kind="nvidia-h200", carry=[".whl", ".devdata"], command="<profile as above>"), then
#   `bash scripts/ablations/round24.sh start`, then `wait 560` until "sweeps still running: 0". Session after (#13):
#     PROFILE_TESTS=0 PROFILE_ITEMS=10000000 PROFILE_LIMIT=540 PROFILE_MERGES='1 16' bash scripts/ablations/round24.sh profile
#     bash scripts/ablations/round20.sh topk .devdata/ckpts/r24_*/0.ckpt   (then `round20.sh wait 560`)
#
# Here afterwards: the profile -> results/profiles/<date>-<kind>-round24-step-tiles-1M.{json,md} and
# docs/benchmarks.md; `mkdir -p .devdata && tar -xzf <files_at>/ckpts.tar.gz -C .devdata` (git-ignored; keep a copy
# outside the checkout too), `python scripts/ingest_runs.py <files_at>/runs.tar.gz results/runs/<date>-<kind>-round24
# --strip-prefix r24_`, scripts/make_results.py, `python scripts/screen_report.py results/runs/<date>-<kind>-round24
# --reference beauty_hstu_large_dot_dim128 --only beauty_hstu --epochs 4 9 19 39 --out docs/screens/<date>-round24.md`,
# the reading into docs/mol_investigation.md (mol_pair_usage.* -> results/studies/<date>-<kind>-round24-pair-usage.*).
ROUND=r24
EPOCHS=${EPOCHS:-101}
export COLLECT_CKPT=${COLLECT_CKPT:-1}
export COLLECT_CKPT_GLOB=${COLLECT_CKPT_GLOB:-'r24_@(ml1m_hstu_large|beauty_hstu_large|beauty_sasrec)_mol_joint_blend/0'}
# shellcheck source=round_steps.sh
source "$(dirname "$0")/round_steps.sh"

trainings() {  # the leading recipe through its config group (checkpoints for #13); Beauty HSTU-large NDCG screens
  local mol=(model/mol_recipe=joint model/similarity_blend=cosine)
  local beauty_hstu=(trainer.precision=32-true)
  [ -n "${ONLY:-}" ] && screen ml1m_hstu_large_mol_joint_blend experiment=ml_1m_seq_hstu_large_mol "${mol[@]}"
  screen beauty_sasrec_mol_joint_blend experiment=amazon_beauty_sasrec_mol "${mol[@]}"
  EPOCHS=41 screen beauty_hstu_large_mol_joint_blend experiment=amazon_beauty_hstu_large_mol "${beauty_hstu[@]}" \
    "${mol[@]}"
  EPOCHS=41 screen beauty_hstu_large_mol_joint_blend_dim128 experiment=amazon_beauty_hstu_large_mol \
    "${beauty_hstu[@]}" "${mol[@]}" model.item_dim=128
  EPOCHS=41 screen beauty_hstu_large_dot_dim128 experiment=amazon_beauty_hstu_large_dot "${beauty_hstu[@]}" \
    model.item_dim=128
  EPOCHS=41 screen beauty_hstu_large_mol_joint_blend_neg2048 experiment=amazon_beauty_hstu_large_mol \
    "${beauty_hstu[@]}" "${mol[@]}" model.negatives.num_negatives=2048
  EPOCHS=41 screen beauty_hstu_large_dot_full_softmax experiment=amazon_beauty_hstu_large_dot "${beauty_hstu[@]}" \
    model/negatives=full_softmax
}

round_main "$@"
