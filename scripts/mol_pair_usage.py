"""Which pairs a trained MoL model's gating uses: its test users with their top-k items and with random items.

For each rails-train MoL checkpoint: the test users' query embeddings through the trained encoder (the run's data
under ``--data-root``), the item table as the corpus; the gating weights pi (eval mode) of each user with its
top ``--k`` items by MoL score and with ``--random-items`` random items, summarised per pair
(:mod:`rails.models.similarity.mol_usage`): mean weight, how often the pair has the largest weight, and the
effective number of pairs. With ``identity_components`` pair 0 is the dot head's cosine logit; with
``residual_components`` also how far the learned maps moved each side's components from the embeddings they
started as (mean ||delta|| / ||e|| and mean cosine to the embedding, over the test users and the item table).
Writes ``--out``/mol_pair_usage.{json,md}.

    python scripts/mol_pair_usage.py --checkpoint runs/x/checkpoints/best.ckpt --data-root .devdata --out results/studies/x
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rails.io import atomic_write
from rails.models.similarity.mol_components import WithIdentityComponent
from rails.models.similarity.mol_usage import pair_weights, residual_deviation, summarise_pair_usage
from rails.retrieval.benchmark_checkpoint import checkpoint_problem
from rails.runs.checkpoints import load_checkpoint_file
from rails.runs.rebuild import trained_test_queries


def usage_of(
    path: Path, label: str, data_root: str, num_queries: int, k: int, num_random: int
) -> dict[str, object]:
    """The pair-usage record of one checkpoint (ValueError naming ``path`` when it cannot be read as MoL)."""
    source = f"--checkpoint {path}"
    checkpoint = load_checkpoint_file(path)
    users = trained_test_queries(checkpoint, data_root, num_queries, "cpu", source)
    problem = checkpoint_problem(
        checkpoint, None, 0.0, torch.float32, "cpu", source, num_queries, path.stem, users
    )
    head, items = problem.head, problem.item_state
    record: dict[str, object] = {
        "checkpoint": str(path),
        "label": label,
        "setting": problem.setting,
        "identity_components": isinstance(head.item_components, WithIdentityComponent),
        "queries": num_queries,
    }
    with torch.no_grad():
        queries = problem.encode(num_queries)
        top = head.score(queries, items).topk(min(k, len(items)), dim=1).indices  # (Q, k)
        gen = torch.Generator().manual_seed(0)
        random_items = torch.randint(0, len(items), (num_random,), generator=gen)
        for name, state in (("top_k", items.gather(top)), ("random", items.gather(random_items))):
            weights, _ = pair_weights(head, queries, state)
            record[name] = summarise_pair_usage(weights).as_dict()
    table = checkpoint["state_dict"]["items.table.weight"][1:].float()  # row 0: padding
    record["residual_deviation"] = residual_deviation(head, problem.queries[:num_queries], table)
    return record


def render(records: list[dict], k: int) -> str:
    lines = [
        "# MoL pair usage of trained checkpoints",
        "",
        f"Written by `scripts/mol_pair_usage.py`: gating weights of each test user with its top {k} items and with "
        "random items (eval mode). With identity components pair 0 is the dot head's cosine logit.",
        "",
        "| checkpoint | setting | identity | items | effective pairs (of P) | pair 0 mean weight | pair 0 top rate "
        "| heaviest pair (mean weight) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for record in records:
        for items in ("top_k", "random"):
            usage = record[items]
            weights = usage["mean_weight"]
            heavy = max(range(len(weights)), key=weights.__getitem__)
            lines.append(
                f"| `{record['label']}` | {record['setting']} | {record['identity_components']} "
                f"| {items} | {usage['effective_pairs']:.2f} of {usage['num_pairs']} | {weights[0]:.3f} "
                f"| {usage['top_pair_rate'][0]:.3f} | {heavy} ({weights[heavy]:.3f}) |"
            )
    moved = [record for record in records if record.get("residual_deviation")]
    if moved:
        lines += [
            "",
            "Residual components: how far the learned maps moved the components from the embeddings (1 / 0: still "
            "the dot head).",
            "",
            "| checkpoint | side | mean cos(component, embedding) | mean ‖delta‖ / ‖embedding‖ |",
            "|---|---|---|---|",
        ]
        for record in moved:
            for side, values in record["residual_deviation"].items():
                lines.append(
                    f"| `{record['label']}` | {side} | {values['cosine']:.3f} | {values['relative_norm']:.3f} |"
                )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, nargs="+", required=True)
    parser.add_argument("--label", nargs="+", help="one name per checkpoint (default: the file names)")
    parser.add_argument("--data-root", required=True, help="data root of the checkpoints' runs")
    parser.add_argument("--queries", type=int, default=512, help="test users")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--random-items", type=int, default=1024)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    labels = args.label or [path.name for path in args.checkpoint]
    if len(labels) != len(args.checkpoint):
        parser.error(f"--label names {len(labels)} checkpoints, --checkpoint gives {len(args.checkpoint)}")
    records = []
    for path, label in zip(args.checkpoint, labels, strict=True):
        try:
            records.append(usage_of(path, label, args.data_root, args.queries, args.k, args.random_items))
        except ValueError as err:
            raise SystemExit(str(err)) from err
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "mol_pair_usage.json", json.dumps(records, indent=1))
    atomic_write(args.out / "mol_pair_usage.md", render(records, args.k))
    print(render(records, args.k))


if __name__ == "__main__":
    main()
