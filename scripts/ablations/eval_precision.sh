#!/usr/bin/env bash
# What bf16 evaluation cost the MoL rows (one H200, < 6 min): three SASRec + MoL heads of the Beauty screens,
# trained under the preset's bf16 autocast for ${EPOCHS:-21} epochs at once, then each best checkpoint scored
# on the test split twice by rails-eval: in float32 (the evaluation since 9148e48) and under bf16 autocast as
# every MoL row before it (+model_overrides.similarity.eval_autocast_bf16=true). Same weights, so the
# difference is the ranking precision alone (bf16 scores tie; ties rank against the target).
#
#   TRAIN_S=200 bash scripts/ablations/eval_precision.sh   # on the device (trainings cut at TRAIN_S s); $OUT/eval_precision.{json,md}, eval_runs.tar.gz
#   SMOKE=1 bash scripts/ablations/eval_precision.sh   # here: one CPU batch per training (debug=limit)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/rails-eval-precision}
WORK=/tmp/rails-eval-precision-work
mkdir -p "$OUT" "$WORK"
# shellcheck source=../device_site.sh
source scripts/device_site.sh
if [ "${SMOKE:-0}" = 1 ]; then
  PY=${PYTHON:-.venv/bin/python}
  extra=(trainer=cpu debug=limit trainer.max_epochs=1 trainer.check_val_every_n_epoch=1)
  eval_extra=(trainer.accelerator=cpu +trainer.limit_test_batches=2)
  export PYTHONPATH=$PWD/src
else
  device_env
  PY=python3
  extra=(trainer.max_epochs="${EPOCHS:-21}")
  eval_extra=()
fi
export OMP_NUM_THREADS=1
common=(experiment=amazon_beauty_sasrec_mol data.root="$PWD/.devdata" ++callbacks.progress_bar=null
  trainer.enable_progress_bar=false seed=1 model.similarity.item_dropout=0.3 "${extra[@]}")
declare -A heads=(
  [mol_8x8x32_gd]="model.similarity.gating_item_dropout=0.3 model.similarity.gating_qi_dropout=0.2"
  [mol_identity_1x1x64]="model.similarity.num_query_components=1 model.similarity.num_item_components=1
    model.similarity.component_dim=64 model.similarity.softmax_dropout=0.0 model.similarity.identity_components=true"
  [mol_residual_8x4x64_gd]="model.similarity.residual_components=true model.similarity.component_dim=64
    model.similarity.num_query_components=8 model.similarity.num_item_components=4
    model.similarity.gating_item_dropout=0.3 model.similarity.gating_qi_dropout=0.2"
)
for name in "${!heads[@]}"; do
  # shellcheck disable=SC2086
  timeout "${TRAIN_S:-600}" $PY -m rails.train "${common[@]}" ${heads[$name]} hydra.run.dir="$WORK/$name/train" >"$WORK/$name.log" 2>&1 &
done
wait
for name in "${!heads[@]}"; do
  ckpt=$(logged_checkpoint "$WORK/$name.log")
  if [ -z "$ckpt" ]; then  # cut short by TRAIN_S: the best checkpoint so far
    ckpt=$(find "$WORK/$name/train/checkpoints" -name "epoch_*.ckpt" 2>/dev/null | sort | tail -n 1)
    [ -n "$ckpt" ] && echo "$name: stopped by TRAIN_S=${TRAIN_S:-600} s; best checkpoint so far $ckpt"
  fi
  if [ -z "$ckpt" ]; then
    echo "$name: no best checkpoint ($(grep -E "Error" "$WORK/$name.log" | tail -n 1))"
    continue
  fi
  for mode in fp32 bf16; do
    override=()
    [ "$mode" = bf16 ] && override=(+model_overrides.similarity.eval_autocast_bf16=true)
    $PY -m rails.eval ckpt_path="$ckpt" "stages=[test]" "${override[@]}" trainer.enable_progress_bar=false \
      hydra.run.dir="$WORK/$name/$mode" "${eval_extra[@]}" >"$WORK/$name.$mode.log" 2>&1 &
  done
done
wait
$PY scripts/eval_precision_table.py "$WORK" --out "$OUT" | tail -n 12
tar czf "$OUT/eval_runs.tar.gz" -C "$WORK" --exclude "*.ckpt" .
