"""Bayes ceiling of the synthetic data and the perfect-encoder capacity of the dot-product and MoL heads.

Prints one JSON line with the oracle metrics of ``conf/data/synthetic.yaml`` (plus ``data.source.*``
overrides), see :func:`rails.datamodules.synthetic_oracle.synthetic_oracle`, then, with ``--capacity-dims``,
one JSON line with the best test HR@10 of each head fitted directly to the exact distributions at each width,
see :func:`rails.models.head_capacity.head_capacity`. Used by docs/mol_investigation.md.

Examples:
    python scripts/synthetic_oracle.py                                      # default synthetic data
    python scripts/synthetic_oracle.py data.source.switch_prob=0.5          # other generator settings
    python scripts/synthetic_oracle.py --capacity-dims 8 50 --capacity-steps 200 --capacity-users 500

Training the heads on the data is a Hydra multirun, not this script, e.g. HSTU-large with both heads, 3 seeds:

    rails-train -m data=synthetic data.max_seq_len=50 data.holdout=2 model/encoder=hstu_large \\
        model.item_dim=50 model.optimizer.weight_decay=1e-3 model.negatives.num_negatives=128 \\
        trainer.max_epochs=60 model/similarity=dot,mol seed=1,2,3
    python scripts/summarize_runs.py logs/train/multiruns/<that sweep>
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml  # PyYAML (a transformers dependency): works where omegaconf is not installed

from rails.datamodules.synthetic_oracle import synthetic_oracle, synthetic_source
from rails.models.head_capacity import head_capacity

SYNTHETIC_YAML = Path(__file__).resolve().parents[1] / "conf" / "data" / "synthetic.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="data.source.<name>=<value> generator settings")
    parser.add_argument(
        "--capacity-dims", type=int, nargs="*", default=[], help="head-capacity fits at these D"
    )
    parser.add_argument("--capacity-steps", type=int, default=400, help="fit steps per head")
    parser.add_argument("--capacity-users", type=int, default=None, help="fit the first N users only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="  %(message)s", stream=sys.stdout)
    base = dict(yaml.safe_load(SYNTHETIC_YAML.read_text())["source"])
    base.pop("_target_")
    try:
        source = synthetic_source(args.overrides, base)
    except ValueError as err:
        parser.error(str(err))
    metrics, probs, targets, seen = synthetic_oracle(source)
    oracle = {k: round(v, 4) for k, v in metrics.items()}
    print(json.dumps({"settings": vars(source), "oracle": oracle}), flush=True)
    users = slice(args.capacity_users)
    capacity = {
        f"{head}_D{dim}": round(
            head_capacity(probs[users], targets[users], seen[users], head, dim, args.capacity_steps), 4
        )
        for dim in args.capacity_dims
        for head in ("dot", "mol")
    }
    if capacity:
        print(json.dumps({"head_capacity_best_test_hr@10": capacity}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
