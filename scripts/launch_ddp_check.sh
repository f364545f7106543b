#!/usr/bin/env bash
# GPU acceptance check for issue #8: train the same preset on 1 and on N GPUs, compare throughput
# (train/seq_per_s from the CSV logger) and check that the N-GPU run's metrics equal a 1-GPU
# `rails-eval` of its best checkpoint. Prints a markdown block for docs/benchmarks.md.
#
#   EXPERIMENT=<hstu preset> GPUS=2 EPOCHS=3 scripts/launch_ddp_check.sh [extra overrides]
set -euo pipefail

EXPERIMENT=${EXPERIMENT:?set EXPERIMENT to an experiment preset (conf/experiment/<name>.yaml)}
GPUS=${GPUS:-2}
EPOCHS=${EPOCHS:-3}
OUT=${OUT:-logs/ddp_check/$(date +%Y-%m-%d_%H-%M-%S)}
COMMON=(experiment="${EXPERIMENT}" trainer.max_epochs="${EPOCHS}" logger=csv trainer.log_every_n_steps=10 "$@")

python -m rails.train "${COMMON[@]}" trainer=gpu trainer.devices=1 hydra.run.dir="${OUT}/gpu1"
python -m rails.train "${COMMON[@]}" trainer=ddp trainer.devices="${GPUS}" hydra.run.dir="${OUT}/gpu${GPUS}"
BEST=$(ls "${OUT}/gpu${GPUS}"/checkpoints/epoch_*.ckpt | head -n 1)
python -m rails.eval ckpt_path="${BEST}" trainer=gpu trainer.devices=1 hydra.run.dir="${OUT}/eval1"

python - "${OUT}" "${GPUS}" <<'PY'
import json, math, sys
from pathlib import Path
import pandas as pd

out, gpus = Path(sys.argv[1]), int(sys.argv[2])

def throughput(run: Path) -> float:
    frame = pd.read_csv(next(run.glob("csv/*/metrics.csv")))
    values = frame["train/seq_per_s"].dropna()
    return float(values.iloc[len(values) // 2 :].median())  # second half: past warm-up

one, many = throughput(out / "gpu1"), throughput(out / f"gpu{gpus}")
ddp = json.loads((out / f"gpu{gpus}" / "metrics.json").read_text())
single = json.loads((out / "eval1" / "metrics.json").read_text())
diffs = {k: abs(ddp[k] - single[k]) for k in single if k in ddp}
worst = max(diffs.values()) if diffs else math.nan
print(f"| GPUs | seq/s (median, 2nd half) | speed-up |\n|---|---|---|")
print(f"| 1 | {one:,.0f} | 1.00x |\n| {gpus} | {many:,.0f} | {many / one:.2f}x |")
print(f"\n{gpus}-GPU metrics vs 1-GPU rails-eval of the same checkpoint: {len(diffs)} metrics, max |diff| = {worst:.2e}")
for key in ("val/hr@10", "val/ndcg@10", "test/hr@10", "test/ndcg@10"):
    if key in ddp:
        print(f"  {key}: ddp {ddp[key]:.6f}  single {single.get(key, float('nan')):.6f}")
PY
