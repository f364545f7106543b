#!/usr/bin/env bash
# The rails-train commands behind each row of the paper's tables (spec §9). Needs the raw datasets
# (python scripts/prepare_data.py <name>, or internet access on first use) and a GPU.
# Usage: scripts/reproduce_paper.sh [ml_1m|ml_20m|amzn_books] [extra Hydra overrides...]
set -euo pipefail
dataset=${1:-ml_1m}
shift || true
rows=(sasrec_dot hstu_dot hstu_large_dot sasrec_mol hstu_large_mol)
presets=$(printf "${dataset}_%s," "${rows[@]}")
rails-train -m "experiment=${presets%,}" "$@"     # one Hydra multirun, a job per row
python scripts/summarize_runs.py logs --metrics test/hr@10 test/ndcg@10 test/hr@50 test/ndcg@50 test/hr@200 test/ndcg@200 test/mrr
