#!/usr/bin/env bash
# GPU round 23 (after round 22), on one H200 (kind nvidia-h200), calls chained within 30 s:
#
#   start   : nine trainings at once. Round 22 (docs/mol_investigation.md §0.14): scored by MoL + the cosine their
#             dot loss trains (1:1, fixed), the checkpoints of the three best MoL recipes ranked better in test
#             NDCG@10 than by MoL alone (ML-1M 1.008x, Beauty HSTU-large 1.026x, SASRec 1.020x), but those
#             checkpoints were selected by MoL's validation metric. Here the same recipes train with
#             `model/similarity_blend=cosine` (the training path is MoL's + the dot loss; validation, the checkpoint
#             selection and the test rank by the blend), seeds 1-3 each: ML-1M HSTU-large + MoL (item dropout
#             0.3, gating dropouts 0.3 / 0.2, dot loss 1; 101 epochs), Beauty HSTU-large + MoL 8x8x32 (the same
#             head, fp32, 41 epochs) and Beauty SASRec + MoL 8x8x32 (101 epochs). Their MoL-ranked twins are
#             round 22's and round 19's rows (results.md).
#   kernel-tests: beside the trainings (correctness only): the fused top-k kernels' GPU tests, first run of the
#             128-register launches the autotuner now tries (a failure is a bug to fix before any timing).
#   wait    : `wait 560` until "sweeps still running: 0" (~22 min; the last wait runs `usage`).
#   cosine  : (~3 min) each run's best checkpoint ranked by MoL alone, the cosine alone and blends with cosine
#             weights 0.5, 1 and 2 (BLENDS below; the report names the one validation prefers per sweep).
#   profile : if >= 9 min are left, else first in the session after (issue #13):
#             PROFILE_TESTS=0 PROFILE_ITEMS=10000000 PROFILE_LIMIT=540 PROFILE_MERGES="1 16" PROFILE_MAXNREG="0 128"
#             bash scripts/ablations/round23.sh profile
#             (round 22 timed 1M only: one sort per merged tile against up to 16 per sort at 10M items, the one-pass
#             search against the two-pass one, and 128 registers per thread, two programs per SM, against ptxas'
#             255; the autotuner now tries 128 too). Faster one-pass at 10M -> the exact index's one-pass / two-pass
#             rule changes; faster at 128 registers -> those launches lead TUNE_CONFIGS.
#
#   here first: .whl/ (scripts/gpu_wheels.sh), .devdata/ with ml-1m-seq and amazon-beauty (../shared/data)
#   run(kind="nvidia-h200", carry=[".whl", ".devdata"], command="bash scripts/ablations/round23.sh start"),
#   then `kernel-tests`, then `wait 560` until "sweeps still running: 0", then `cosine`, then `profile` as above
#
# Here afterwards: `python scripts/ingest_runs.py <files_at>/runs.tar.gz results/runs/<date>-<kind>-round23
# --strip-prefix r23_`, scripts/make_results.py (the blend rows beside round 22's MoL rows in results.md), `python
# scripts/cosine_eval_report.py <files_at>/cosine_eval.json --out results/studies/<date>-<kind>-round23-cosine.md`,
# the reading into docs/mol_investigation.md (mol_pair_usage.* -> results/studies/<date>-<kind>-round23-pair-usage.*);
# the profile -> results/profiles/<date>-<kind>-round23-fused-exact-merge-10M.{json,md} and docs/benchmarks.md.
ROUND=r23
EPOCHS=${EPOCHS:-101}
export BLENDS=${BLENDS:-"mol:1.0:0.0 cosine:0.0:1.0 mol+cosine:1.0:1.0 mol+0.5cosine:1.0:0.5 mol+2cosine:1.0:2.0"}
# shellcheck source=round_steps.sh
source "$(dirname "$0")/round_steps.sh"

trainings() {  # round 22's three MoL + dot-loss recipes, ranked and selected by MoL + cosine; three seeds each
  local head=(model.similarity.item_dropout=0.3 model.similarity.gating_item_dropout=0.3
    model.similarity.gating_qi_dropout=0.2 model.dot_loss_weight=1.0 model/similarity_blend=cosine)
  SEEDS=1,2,3 screen ml1m_hstu_large_mol_gd_dl_1_blend experiment=ml_1m_seq_hstu_large_mol "${head[@]}"
  SEEDS=1,2,3 EPOCHS=41 screen beauty_hstu_large_mol_8x8x32_gd_dl_1_blend experiment=amazon_beauty_hstu_large_mol \
    trainer.precision=32-true "${head[@]}"
  SEEDS=1,2,3 screen beauty_sasrec_mol_8x8x32_gd_dl_1_blend experiment=amazon_beauty_sasrec_mol "${head[@]}"
}

round_main "$@"
