"""Comparisons over result rows (the dicts of :func:`rails.results.summarize`): MoL against its dot baseline,
and the short README table.

A MoL row's dot baseline is the dot row trained the same way: the same dataset, model, protocol and variant;
else the dot row whose variant is the MoL variant without the head's own keys (:data:`HEAD_KEY_PREFIXES`: the
similarity head and its blend, its recipe group, its auxiliary dot loss and its weight decay), so
``trainer.max_epochs=41 model.dot_loss_weight=1.0`` is compared with the dot head's ``trainer.max_epochs=41`` and
``experiment=amazon_beauty_hstu_large_mol_tuned`` with ``experiment=amazon_beauty_hstu_large_dot_tuned``;
else the preset dot row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

HEAD_KEY_PREFIXES = (
    "model.similarity.",
    "model.dot_loss_",
    "model.head_weight_decay",
    "model/similarity",  # also model/similarity_blend
    "model/mol_recipe",
)
COMPARED_METRICS = ("test/hr@10", "test/ndcg@10")


def metric_cell(row: Mapping[str, Any], name: str) -> str:
    """``mean`` (one seed) or ``mean ± std`` of one metric of a row, ``–`` when the row lacks it."""
    value = row["metrics"].get(name)
    if value is None:
        return "–"
    if value["n"] == 1:
        return f"{value['mean']:.4f}"
    return f"{value['mean']:.4f} ± {value['std']:.4f}"


def head_free_variant(variant: str) -> str:
    """The variant without the head's own overrides (``preset`` when nothing else is left); a tuned MoL preset
    (``experiment=amazon_beauty_hstu_large_mol_tuned``) becomes its dot twin (``..._dot_tuned``)."""
    kept = []
    for item in variant.split():
        if item == "preset" or item.startswith(HEAD_KEY_PREFIXES):
            continue
        if item.startswith("experiment="):
            name = item.removeprefix("experiment=").split("_")
            item = "experiment=" + "_".join("dot" if part == "mol" else part for part in name)
        kept.append(item)
    return " ".join(kept) or "preset"


def mol_vs_dot(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every MoL row against its dot-product baseline (module docstring): ratios of the mean test HR@10 and
    NDCG@10, with both variants and seed counts."""
    dots = {(r["dataset"], r["model"], r["protocol"], r["variant"]): r for r in rows if r["head"] == "dot"}
    pairs = []
    for row in (r for r in rows if r["head"] == "mol"):
        where = (row["dataset"], row["model"], row["protocol"])
        candidates = (row["variant"], head_free_variant(row["variant"]), "preset")
        base = next((dots[(*where, v)] for v in candidates if (*where, v) in dots), None)
        if base is None:
            continue
        ratio = {m: row["metrics"][m]["mean"] / base["metrics"][m]["mean"] for m in COMPARED_METRICS}
        pairs.append({"dataset": row["dataset"], "model": row["model"], "protocol": row["protocol"],
                      "variant": row["variant"], "seeds": len(row["seeds"]), "dot_variant": base["variant"],
                      "dot_seeds": len(base["seeds"]), "ratio": ratio})  # fmt: skip
    return pairs


def mol_vs_dot_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The ``MoL vs dot`` section of results.md (empty without a MoL row that has a baseline)."""
    pairs = mol_vs_dot(rows)
    if not pairs:
        return []
    lines = [
        "## MoL vs dot product",
        "",
        "Mean test metric of each MoL row / its dot-product baseline (same dataset, model, protocol and variant; "
        "else the variant without the head's own keys (`model.similarity.*`, `model.dot_loss_*`, "
        "`model.head_weight_decay`, `model/similarity*`, `model/mol_recipe`); else the preset dot row).",
        "",
        "| dataset | model | protocol | MoL variant (seeds) | dot variant (seeds) | HR@10 ratio | NDCG@10 ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in pairs:
        lines.append(
            f"| {p['dataset']} | {p['model']} | {p['protocol']} | `{p['variant']}` ({p['seeds']}) | "
            f"`{p['dot_variant']}` ({p['dot_seeds']}) | {p['ratio']['test/hr@10']:.3f} | "
            f"{p['ratio']['test/ndcg@10']:.3f} |"
        )
    return [*lines, ""]


def best_confirmed_rows(rows: list[dict[str, Any]], min_seeds: int = 3) -> list[dict[str, Any]]:
    """Per (dataset, model, head, protocol), the non-preset row with the highest mean test NDCG@10 among the
    rows with at least ``min_seeds`` seeds (the tuned setting that a multi-seed run confirmed)."""
    best: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for row in rows:
        ndcg = row["metrics"].get("test/ndcg@10")
        if row["variant"] == "preset" or len(row["seeds"]) < min_seeds or ndcg is None:
            continue
        key = (row["dataset"], row["model"], row["head"], row["protocol"])
        if key not in best or ndcg["mean"] > best[key]["metrics"]["test/ndcg@10"]["mean"]:
            best[key] = row
    return list(best.values())


def readme_table(rows: list[dict[str, Any]], datasets: Iterable[str], min_seeds: int = 3) -> str:
    """The short README table of ``datasets``: the preset rows, and per dataset / model / head / protocol the
    best tuned row with at least ``min_seeds`` seeds (:func:`best_confirmed_rows`), with its variant."""
    lines = [
        "| dataset | model | head | protocol | variant | seeds | test HR@10 | test NDCG@10 | paper HR@10 / NDCG@10 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    wanted = list(datasets)
    tuned = {id(row) for row in best_confirmed_rows(rows, min_seeds)}
    for row in rows:
        if row["dataset"] not in wanted or (row["variant"] != "preset" and id(row) not in tuned):
            continue
        published = row.get("published") or {}
        paper = f"{published['test/hr@10']:.4f} / {published['test/ndcg@10']:.4f}" if published else "–"
        lines.append(
            f"| {row['dataset']} | {row['model']} | {row['head']} | {row['protocol']} | `{row['variant']}` | "
            f"{len(row['seeds'])} | {metric_cell(row, 'test/hr@10')} | {metric_cell(row, 'test/ndcg@10')} | "
            f"{paper} |"
        )
    return "\n".join(lines) + "\n"
