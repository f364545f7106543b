"""Result tables from run directories: one row per (dataset, model, head, protocol, variant), mean ± std over seeds.

A run directory is what ``rails-train`` leaves: ``metrics.json``, ``run.json`` (launch command, GPU kind,
versions) and ``.hydra/config.yaml`` + ``.hydra/overrides.yaml``. Runs are grouped by their experiment
identity: the ``tags`` of the preset (``[dataset, model, head]``), the split protocol (``data.holdout``) and the
*variant*, i.e. every command-line override except the seed and paths (so an ablation such as
``model.negatives.num_negatives=512`` is its own row, and so is a tuned preset such as
``experiment=amazon_beauty_hstu_large_mol_tuned``). :func:`write_results` turns the rows into
``results.json`` (machine-readable) and ``results.md``; nothing in those files is typed by hand. How each row
trained (best epoch, learning curves from ``epochs.csv``) comes from :mod:`rails.results_curves`.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rails.results_compare import metric_cell, mol_vs_dot_markdown
from rails.results_curves import Curve, best_epoch, plot_learning_curves, read_epochs_csv

log = logging.getLogger(__name__)
# Overrides that do not change what is measured (where files live, how the run is launched, its seed, and how
# fast the same model runs: a compiled encoder and fused AdamW compute the same step, up to rounding).
_NEUTRAL_PREFIXES = (
    "model.compile_encoder=",
    "model.compile_mode=",
    "model.similarity.compile_mixing=",
    "model.optimizer.fused=",
    "seed=",
    "hydra.",
    "hydra/",
    "paths.",
    "data.root=",
    "data.num_workers=",
    "data.source.raw_dir=",
    "data.source.items_file=",
    "data.source.timestamps_file=",
    "data.source.catalog_file=",
    "data.source.cache_dir=",
    "logger",
    "~logger",
    "trainer.enable_progress_bar=",
    "callbacks.progress_bar=",
    "task_name=",
    "tags=",
)

# Published numbers (spec §9; ../shared/data/amazon-beauty/README.md), keyed by (dataset, model, head), with the
# split protocol they were measured under (a row shows them only when its protocol is the same).
PAPER, SEPARATE_VAL = "paper (val = test item)", "separate val item"
_S3REC = {"protocol": SEPARATE_VAL}  # the S3-Rec protocol of the published Amazon rows
PUBLISHED: dict[tuple[str, str, str], dict[str, Any]] = {
    ("ml_1m", "sasrec", "dot"): {"protocol": PAPER, "test/hr@10": 0.2853, "test/ndcg@10": 0.1603},
    ("ml_1m", "hstu", "dot"): {"protocol": PAPER, "test/hr@10": 0.3097, "test/ndcg@10": 0.1720},
    ("ml_1m", "hstu_large", "dot"): {"protocol": PAPER, "test/hr@10": 0.3294, "test/ndcg@10": 0.1893},
    ("ml_1m", "hstu_large", "mol"): {"protocol": PAPER, "test/hr@10": 0.3412, "test/ndcg@10": 0.1979},
    # Beauty anchors: SASRec with sampled softmax (eSASRec benchmark); BSARec, the best published model (its
    # released logs), for rails' BSARec-style encoder.
    ("amazon_beauty", "sasrec", "dot"): {**_S3REC, "test/hr@10": 0.0921, "test/ndcg@10": 0.0531},
    ("amazon_beauty", "bsarec", "dot"): {**_S3REC, "test/hr@10": 0.1008, "test/ndcg@10": 0.0611},
}
# The shared ML-1M copy (data=ml_1m_seq) holds the same interactions as the official release.
DATASET_ALIASES = {"ml_1m_seq": "ml_1m"}
TABLE_METRICS = ("test/hr@10", "test/ndcg@10", "test/hr@50", "test/ndcg@50", "test/hr@200", "test/ndcg@200")


@dataclass
class Run:
    """One finished run directory."""

    path: Path
    config: dict[str, Any]
    overrides: list[str]
    metrics: dict[str, float]
    record: dict[str, Any] = field(default_factory=dict)
    curve: Curve | None = None  # epoch -> val metrics, from epochs.csv (None: no file, or an unusable one)
    best_epoch: int | None = None  # epoch of the checkpoint selected by val/ndcg@10

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """The row this run belongs to: (dataset, model, head, protocol, variant)."""
        return (*self.identity, self.protocol, self.variant)

    @property
    def identity(self) -> tuple[str, str, str]:
        """(dataset, model, head) from the preset's tags, else from the configured classes.

        A ``data=<name>`` override (a preset trained on another dataset) names the dataset.
        """
        tags = [str(t) for t in self.config.get("tags") or []]
        if len(tags) >= 3:
            return self.data_override or tags[0], tags[1], tags[2]
        model = self.config.get("model", {})

        def name(node: Any) -> str:
            return str((node or {}).get("_target_", "?")).rsplit(".", 1)[-1]

        return self.config.get("task_name", "?"), name(model.get("encoder")), name(model.get("similarity"))

    @property
    def data_override(self) -> str | None:
        """The data group chosen on the command line (``data=ml_100k``), None when the preset's own."""
        for override in self.overrides:
            if override.lstrip("+~").startswith("data="):
                return override.split("=", 1)[1]
        return None

    @property
    def protocol(self) -> str:
        holdout = (self.config.get("data") or {}).get("holdout", 1)
        return PAPER if holdout == 1 else SEPARATE_VAL

    @property
    def variant(self) -> str:
        """The overrides that change what is measured, sorted; ``preset`` when none.

        ``experiment=<name>`` is one of them unless ``<name>`` is ``<dataset>_<model>_<head>`` of the preset's own
        tags: a tuned preset (``amazon_beauty_hstu_large_mol_tuned``, tagged like its base preset) is its own row.
        """
        kept = [o for o in self.overrides if not o.lstrip("+~").startswith(_NEUTRAL_PREFIXES)]
        base = "_".join(str(t) for t in (self.config.get("tags") or [])[:3])
        kept = [
            o
            for o in kept
            if not o.lstrip("+~").startswith("data=") and o.lstrip("+~") != f"experiment={base}"
        ]
        return " ".join(sorted(kept)) or "preset"

    @property
    def seed(self) -> int | None:
        seed = self.config.get("seed")
        return int(seed) if seed is not None else None


def read_run(directory: str | Path) -> Run | None:
    """Read a run directory; None when it has no ``metrics.json`` (an unfinished or failed run).

    An unusable ``epochs.csv`` is skipped with a warning naming it (the run keeps its row, without a curve).
    """
    directory = Path(directory)
    metrics_path = directory / "metrics.json"
    config_path = directory / ".hydra" / "config.yaml"
    if not metrics_path.is_file() or not config_path.is_file():
        return None
    metrics = {k: v for k, v in json.loads(metrics_path.read_text()).items() if v is not None}
    overrides_path = directory / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_path.read_text()) if overrides_path.is_file() else []
    record_path = directory / "run.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    curve = None
    if (directory / "epochs.csv").is_file():
        trained = record.get("epochs")
        try:
            curve = read_epochs_csv(directory / "epochs.csv", int(trained) if trained is not None else None)
        except ValueError as error:
            log.warning(f"skipping the learning curve of {directory}: {error}")
    config = yaml.safe_load(config_path.read_text()) or {}
    return Run(
        directory,
        config,
        list(overrides or []),
        metrics,
        record,
        curve,
        best_epoch(directory, record, curve),
    )


def collect_runs(roots: Iterable[str | Path]) -> list[Run]:
    """Every finished run directory under ``roots`` (searched recursively for ``metrics.json``)."""
    runs = []
    for root in roots:
        for metrics_path in sorted(Path(root).rglob("metrics.json")):
            run = read_run(metrics_path.parent)
            if run is not None:
                runs.append(run)
    return runs


def _mean_std(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def _range(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "n": len(values)}


def summarize(runs: Iterable[Run]) -> list[dict[str, Any]]:
    """Rows of mean/std over seeds, sorted by dataset, model, head, protocol and variant.

    Each row: ``dataset``, ``model``, ``head``, ``protocol``, ``variant``, ``seeds``, ``metrics``
    (``{name: {mean, std, n}}`` for every ``test/*`` metric), ``commands``, ``gpu``, ``epochs``,
    ``run_dirs``, ``published`` (the paper's numbers for that row, when there are any) and ``best_epoch``
    (``{mean, min, max, n}`` over the seeds whose best epoch is known, else None).
    """
    groups: dict[tuple[str, str, str, str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.key].append(run)
    rows = []
    for (dataset, model, head, protocol, variant), members in sorted(groups.items()):
        names = sorted({k for r in members for k in r.metrics if k.startswith("test/")})
        metrics = {}
        for name in names:
            values = [float(r.metrics[name]) for r in members if name in r.metrics]
            if values and all(math.isfinite(v) for v in values):
                metrics[name] = _mean_std(values)
        published = PUBLISHED.get((DATASET_ALIASES.get(dataset, dataset), model, head))
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "head": head,
                "protocol": protocol,
                "variant": variant,
                "seeds": sorted(s for s in (r.seed for r in members) if s is not None),
                "metrics": metrics,
                "commands": sorted(
                    {str(r.record.get("command")) for r in members if r.record.get("command")}
                ),
                "gpu": sorted({str(r.record.get("system.gpu")) for r in members}),
                "epochs": sorted({int(r.record["epochs"]) for r in members if "epochs" in r.record}),
                "run_dirs": sorted(str(r.path) for r in members),
                "published": published if published and published["protocol"] == protocol else None,
                "best_epoch": _range([r.best_epoch for r in members if r.best_epoch is not None]),
            }
        )
    return rows


def _best_epoch_cell(row: Mapping[str, Any]) -> str:
    value = row.get("best_epoch")
    if not value:
        return "–"
    if value["n"] == 1:
        return f"{value['mean']:.0f}"
    return f"{value['mean']:.1f} ({value['min']}–{value['max']})"


def row_label(model: str, head: str, variant: str, protocol: str | None = None) -> str:
    """How a row is named in a figure legend: ``model / head / variant`` (+ the protocol when given)."""
    return " / ".join([model, head, variant, *([protocol] if protocol else [])])


def write_learning_curves(runs: Iterable[Run], folder: Path, prefix: str = "results") -> dict[str, Any]:
    """One figure per dataset with a curve (``<folder>/<prefix>_<dataset>.png``), one line per row.

    Returns:
        ``{dataset: {"file": the PNG's name, "missing": labels of the rows without any epochs.csv}}``, only
        for the datasets that have a figure.
    """
    groups: dict[tuple[str, str, str, str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.key].append(run)
    by_dataset: dict[str, list[tuple[tuple[str, str, str, str, str], list[Run]]]] = defaultdict(list)
    for key, members in sorted(groups.items()):
        by_dataset[key[0]].append((key, members))
    figures = {}
    for dataset, members in by_dataset.items():
        several_protocols = len({key[3] for key, _ in members}) > 1
        series, missing = [], []
        for (_, model, head, protocol, variant), group in members:
            label = row_label(model, head, variant, protocol if several_protocols else None)
            curves = [r.curve for r in group if r.curve]
            if not curves:
                missing.append(label)
                continue
            seeds = f" ({len(curves)} of {len(group)} seeds)" if len(curves) < len(group) else ""
            series.append((label + seeds, curves))
        if series:
            path = plot_learning_curves(series, folder / f"{prefix}_{dataset}.png", dataset)
            figures[dataset] = {"file": path.name, "missing": missing}
    return figures


def markdown(
    rows: list[dict[str, Any]], title: str = "Results", figures: Mapping[str, Any] | None = None
) -> str:
    """``results.md``: one table per dataset (with its learning-curve figure, when ``figures`` names one, as
    :func:`write_learning_curves` returns them), then the exact commands of every row."""
    figures = figures or {}
    lines = [
        f"# {title}",
        "",
        "Generated by `scripts/make_results.py` from the run directories listed in `results.json`; do not edit.",
        "Mean ± sample std over seeds; test metrics of the checkpoint with the best `val/ndcg@10`;",
        "best epoch: that checkpoint's epoch (0-based), mean (min–max) over seeds.",
        "",
    ]
    by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_dataset[row["dataset"]].append(row)
    header = "| model | head | protocol | variant | seeds | best epoch | " + " | ".join(
        n[5:] for n in TABLE_METRICS
    )
    for dataset, members in by_dataset.items():
        lines += [f"## {dataset}", "", header + " | paper HR@10 / NDCG@10 | GPU |"]
        lines.append("|" + "---|" * (len(TABLE_METRICS) + 8))
        for row in members:
            published = row.get("published") or {}
            paper = f"{published['test/hr@10']:.4f} / {published['test/ndcg@10']:.4f}" if published else "–"
            cells = [metric_cell(row, n) for n in TABLE_METRICS]
            lines.append(
                f"| {row['model']} | {row['head']} | {row['protocol']} | `{row['variant']}` | "
                f"{len(row['seeds'])} | {_best_epoch_cell(row)} | "
                + " | ".join(cells)
                + f" | {paper} | {', '.join(row['gpu'])} |"
            )
        lines.append("")
        figure = figures.get(dataset)
        if figure:
            lines += [
                f"![{dataset}: validation metrics per epoch]({figure['file']})",
                "",
                f"Learning curves ([{figure['file']}]({figure['file']})): `val/ndcg@10` and `val/hr@10` per "
                "epoch from each run's `epochs.csv`, mean over seeds with the min–max band.",
            ]
            if figure["missing"]:
                lines.append("Not in the figure (no `epochs.csv`): " + "; ".join(figure["missing"]) + ".")
            lines.append("")
    lines += mol_vs_dot_markdown(rows)
    lines += ["## Commands", ""]
    for row in rows:
        lines.append(f"- {row['dataset']} / {row['model']} / {row['head']} / {row['variant']}:")
        lines += [f"  - `{command}`" for command in row["commands"]]
    return "\n".join(lines) + "\n"
