"""Markdown table of a round's ``cosine_eval.json`` (scripts/ablations/round22.sh ``cosine``).

    python scripts/cosine_eval_report.py <files_at>/cosine_eval.json --out results/studies/<date>-<kind>-round22-cosine.md

For each MoL run trained with the dot head's loss: its metrics ranked by MoL, by the cosine that loss trained
(``rails.models.similarity.mol_cosine.MoLWithCosine``, ``mol_weight=0``), by their sum and by any other blend the
round scored (e.g. ``mol+0.5cosine``; round_steps.sh ``BLENDS``), through ``rails-eval`` on the same checkpoint, with
each scorer's ratio to MoL; then, per sweep, the scorer with the best mean validation NDCG@10 (a choice made on
validation; with the paper protocol's validation = test item it is a choice made on test). The JSON is copied beside
the table.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

METRICS = ("val/ndcg@10", "test/hr@10", "test/ndcg@10", "test/hr@200")
SCORERS = (
    "mol",
    "cosine",
    "mol+cosine",
)  # always reported (failed when missing); other blends follow, sorted
NOT_SCORERS = {"training run"}  # the run's own metrics from training, kept in the JSON


def scorers_of(runs: dict[str, dict[str, Any]]) -> list[str]:
    """SCORERS, then every other scorer name of ``runs`` in sorted order."""
    names = {name for scorers in runs.values() for name in scorers} - NOT_SCORERS - set(SCORERS)
    return [*SCORERS, *sorted(names)]


def with_sweep_means(runs: dict[str, dict[str, Any]], scorers: list[str]) -> dict[str, dict[str, Any]]:
    """``runs`` plus, for each sweep (the part of ``<sweep>/<job>`` before the slash) with several jobs, a row
    ``<sweep> (mean of n)``: each scorer's metrics averaged over the jobs where every one of them succeeded."""
    sweeps: dict[str, list[str]] = {}
    for run in runs:
        sweeps.setdefault(run.split("/")[0], []).append(run)
    merged = dict(runs)
    for sweep, jobs in sweeps.items():
        if len(jobs) < 2:
            continue
        done = [job for job in jobs if all(runs[job].get(scorer) for scorer in scorers)]
        if not done:
            continue
        merged[f"{sweep} (mean of {len(done)})"] = {
            scorer: {
                m: sum(runs[j][scorer][m] for j in done) / len(done)
                for m in METRICS
                if all(m in runs[j][scorer] for j in done)
            }
            for scorer in scorers
        }
    return merged


def formatted(metrics: dict[str, float], keys: tuple[str, ...], separator: str) -> str:
    """``metrics[key]`` to 4 decimals for each key (– when absent), joined by ``separator``."""
    return separator.join(f"{metrics[key]:.4f}" if key in metrics else "–" for key in keys)


def chosen_on_validation(runs: dict[str, dict[str, Any]], scorers: list[str]) -> list[str]:
    """One line per run or sweep mean: the scorer with the best validation NDCG@10 and its test HR@10 / NDCG@10."""
    lines = []
    for run, results in runs.items():
        scored = [
            (results[s]["val/ndcg@10"], s) for s in scorers if (results.get(s) or {}).get("val/ndcg@10")
        ]
        if not scored:
            continue
        _, best = max(scored)
        metrics = results[best]
        test = formatted(metrics, ("test/hr@10", "test/ndcg@10"), " / ")
        lines.append(f"- `{run}`: {best} (validation NDCG@10 {metrics['val/ndcg@10']:.4f}; test {test})")
    return lines


def table(runs: dict[str, dict[str, Any]], source: str) -> str:
    """The markdown report of ``runs`` ({run: {scorer: metrics or None}}) and their sweeps' means."""
    scorers = scorers_of(runs)
    runs = with_sweep_means(runs, scorers)
    header = " | ".join(METRICS)
    lines = [
        "# MoL vs the cosine its dot loss trained, on the same checkpoints",
        "",
        f"Written by `scripts/cosine_eval_report.py` from `{source}` (rails-eval of each run's best checkpoint; ratios "
        "to the MoL row: test HR@10 / NDCG@10).",
        "",
        f"| run | scorer | {header} | ratio to MoL |",
        "|---|---|" + "---|" * (len(METRICS) + 1),
    ]
    for run, results in runs.items():
        base = results.get("mol") or {}
        for scorer in scorers:
            metrics = results.get(scorer)
            if not metrics:
                lines.append(f"| `{run}` | {scorer} | " + " | ".join("failed" for _ in METRICS) + " | – |")
                continue
            cells = formatted(metrics, METRICS, " | ")
            ratios = [
                f"{metrics[m] / base[m]:.3f}" if base.get(m) and m in metrics else "–"
                for m in ("test/hr@10", "test/ndcg@10")
            ]
            lines.append(f"| `{run}` | {scorer} | {cells} | {' / '.join(ratios)} |")
    lines += ["", "Scorer with the best validation NDCG@10 (per run and per sweep mean):", ""]
    return "\n".join(lines + chosen_on_validation(runs, scorers)) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("json", type=Path, help="cosine_eval.json of a round")
    parser.add_argument(
        "--out", type=Path, required=True, help="markdown file to write (the JSON goes beside it)"
    )
    args = parser.parse_args()
    try:
        runs = json.loads(args.json.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"cosine_eval_report: {args.json}: {error}") from None
    if not isinstance(runs, dict) or not all(isinstance(v, dict) for v in runs.values()):
        raise SystemExit(f"cosine_eval_report: {args.json}: expected {{run: {{scorer: metrics}}}}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table(runs, args.json.name))
    if args.json.resolve() != args.out.with_suffix(".json").resolve():
        shutil.copyfile(args.json, args.out.with_suffix(".json"))
    print(f"{len(runs)} runs -> {args.out}")


if __name__ == "__main__":
    main()
