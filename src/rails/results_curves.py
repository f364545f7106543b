"""How a run trained: its per-epoch validation curve (``epochs.csv``), best epoch and learning-curve figures.

``epochs.csv`` is Lightning's ``CSVLogger`` ``metrics.csv`` copied into the run directory
(``scripts/gpu_sweep.sh``): one row per logging call, columns ``epoch``, ``step`` and every logged metric, a
cell left empty when that metric was not logged at that step. The epoch-level validation rows are those
with ``val/ndcg@10``; the validation that ``rails-train`` repeats on the best checkpoint after ``fit`` is
logged too (at the epoch after the last one trained, at the step of the test row) and is dropped. The best
epoch is the epoch of the checkpoint ``ModelCheckpoint`` kept (``run.json``'s ``best_checkpoint`` or the job
log's ``best checkpoint: .../epoch_067.ckpt`` line), else the first epoch with the largest ``val/ndcg@10``.
"""

from __future__ import annotations

import csv
import logging
import math
import re
import statistics
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rails.io import atomic_write

log = logging.getLogger(__name__)

MONITOR = "val/ndcg@10"  # what ModelCheckpoint selects on (conf/callbacks/default.yaml)
PANELS = ("val/ndcg@10", "val/hr@10")
LINE_STYLES = ("-", "--", ":", "-.")
LEGEND_WIDTH = 150  # characters per legend line (the figure is 12 inches wide)
LEGEND_LINE_IN = 0.15  # inches per legend line
_CHECKPOINT_LINE = re.compile(r"best checkpoint: (\S+)")
_CHECKPOINT_EPOCH = re.compile(r"epoch[_=]?(\d+)")

# epoch -> {metric: value}: the epoch-level validation metrics of one run
Curve = dict[int, dict[str, float]]


def read_epochs_csv(path: str | Path, trained_epochs: int | None = None) -> Curve:
    """The epoch-level validation metrics of one ``epochs.csv``.

    Args:
        path: the CSVLogger metrics file.
        trained_epochs: epochs ``fit`` ran (``run.json``'s ``epochs``); validation rows at or after it come
            from the post-``fit`` validation of the best checkpoint and are dropped. None: only rows logged at
            the step of a ``test/*`` row are taken as post-``fit``.

    Returns:
        ``{epoch: {metric: value}}`` for every ``val/*`` metric; the last validation row of an epoch wins.

    Raises:
        ValueError: naming the file (and line) when a column is missing, a value is not a number or there is
            no validation row.
    """
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            fields = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path}: cannot be read as CSV ({error})") from error
    missing = [c for c in ("epoch", "step", MONITOR) if c not in fields]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(missing)} (columns: {', '.join(fields) or 'none'})")
    test_steps = {r["step"] for r in rows if any(k and k.startswith("test/") and v for k, v in r.items())}
    curve: Curve = {}
    for line, row in enumerate(rows, start=2):
        if not row.get(MONITOR) or row["step"] in test_steps:
            continue
        try:
            epoch = int(float(row["epoch"]))
            values = {k: float(v) for k, v in row.items() if k and k.startswith("val/") and v}
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}:{line}: not a number ({error})") from error
        if trained_epochs is None or epoch < trained_epochs:
            curve[epoch] = values
    if not curve:
        raise ValueError(f"{path}: no epoch-level validation row (no {MONITOR} value during fit)")
    return dict(sorted(curve.items()))


def read_train_loss(
    path: str | Path, trained_epochs: int | None = None, column: str = "train/loss"
) -> dict[int, float]:
    """The mean training loss of each epoch of one ``epochs.csv`` (every row with a ``column`` value).

    ``trained_epochs`` (``run.json``'s ``epochs``) drops the rows logged at or after it, as
    :func:`read_epochs_csv` does.

    Returns:
        ``{epoch: mean loss}``, empty when the file has no ``column``.

    Raises:
        ValueError: naming the file and line of a value that is not a number.
    """
    path = Path(path)
    sums: dict[int, list[float]] = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if column not in (reader.fieldnames or []):
            return {}
        for line, row in enumerate(reader, start=2):
            if not row.get(column):
                continue
            try:
                sums.setdefault(int(float(row["epoch"])), []).append(float(row[column]))
            except (TypeError, ValueError) as error:
                raise ValueError(f"{path}:{line}: not a number ({error})") from error
    return {
        epoch: statistics.fmean(values)
        for epoch, values in sorted(sums.items())
        if trained_epochs is None or epoch < trained_epochs
    }


def best_epoch_of_curve(curve: Curve, metric: str = MONITOR) -> int | None:
    """The first epoch with the largest finite ``metric`` (ModelCheckpoint keeps a strict improvement)."""
    scored = [(v[metric], -epoch) for epoch, v in curve.items() if math.isfinite(v.get(metric, math.nan))]
    return -max(scored)[1] if scored else None


def checkpoint_epoch(checkpoint: str) -> int | None:
    """``.../checkpoints/epoch_067.ckpt`` -> 67; None when the file name carries no epoch."""
    match = _CHECKPOINT_EPOCH.search(Path(checkpoint).name)
    return int(match.group(1)) if match else None


def best_checkpoint(directory: Path, record: Mapping[str, Any]) -> str | None:
    """A run's best checkpoint: ``run.json``'s ``best_checkpoint``, else the last job-log line naming it."""
    if record.get("best_checkpoint"):
        return str(record["best_checkpoint"])
    found = None
    for log_path in sorted(directory.glob("*.log")):
        for match in _CHECKPOINT_LINE.finditer(log_path.read_text(errors="replace")):
            found = match.group(1)
    return found


def best_epoch(directory: Path, record: Mapping[str, Any], curve: Curve | None) -> int | None:
    """The epoch of the run's selected checkpoint, else the argmax of its curve; a disagreement is logged."""
    checkpoint = best_checkpoint(directory, record)
    from_checkpoint = checkpoint_epoch(checkpoint) if checkpoint else None
    from_curve = best_epoch_of_curve(curve) if curve else None
    if from_checkpoint is not None and from_curve is not None and from_checkpoint != from_curve:
        log.warning(
            f"{directory}: best checkpoint {checkpoint} (epoch {from_checkpoint}) but epochs.csv peaks "
            f"at epoch {from_curve}; the table shows the checkpoint's epoch"
        )
    return from_checkpoint if from_checkpoint is not None else from_curve


def band(curves: Sequence[Curve], metric: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Epochs, mean, min and max of ``metric`` over ``curves`` (each epoch over the curves that have it)."""
    epochs = sorted({e for c in curves for e, v in c.items() if metric in v})
    values = [[c[e][metric] for c in curves if metric in c.get(e, {})] for e in epochs]
    return epochs, [statistics.fmean(v) for v in values], [min(v) for v in values], [max(v) for v in values]


def line_style(index: int) -> tuple[int, str]:
    """The ``index``-th series' (tab10 colour index, matplotlib line style): distinct for the first 40 series."""
    return index % 10, LINE_STYLES[(index // 10) % len(LINE_STYLES)]


def plot_learning_curves(series: Sequence[tuple[str, Sequence[Curve]]], path: Path, title: str) -> Path:
    """One PNG: a panel per metric of :data:`PANELS`, a line per series (mean over its curves, min-max band).

    Args:
        series: (legend label, the curves of the row's seeds) per table row.
        path: the PNG to write (atomically).
        title: the figure's title.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # one legend entry per series, wrapped to the figure's width and listed in one column below the panels (the
    # figure grows with it, the panels keep their size); ten colours x four line styles tell 40 series apart
    labels = ["\n".join(textwrap.wrap(label, LEGEND_WIDTH, subsequent_indent="    ")) for label, _ in series]
    legend_lines = sum(label.count("\n") + 1 for label in labels)
    legend_in = 0.3 + LEGEND_LINE_IN * legend_lines
    panels_in = 4.2
    fig, axes = plt.subplots(
        1, len(PANELS), figsize=(6.0 * len(PANELS), panels_in + legend_in), squeeze=False
    )
    colors = plt.get_cmap("tab10")
    handles: dict[str, Any] = {}
    for ax, metric in zip(axes.flat, PANELS, strict=True):
        for index, ((_, curves), label) in enumerate(zip(series, labels, strict=True)):
            epochs, mean, low, high = band(curves, metric)
            if not epochs:
                continue
            color_index, style = line_style(index)
            color = colors(color_index)
            (handles[label],) = ax.plot(
                epochs, mean, color=color, linestyle=style, linewidth=1.4, label=label
            )
            if len(curves) > 1:
                ax.fill_between(epochs, low, high, color=color, alpha=0.2, linewidth=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
    fig.legend(handles.values(), handles.keys(), loc="lower left", ncol=1, frameon=False, fontsize=7.5)
    fig.suptitle(f"{title}: validation per epoch (mean over seeds, min-max band)")
    total_in = panels_in + legend_in
    fig.tight_layout(rect=(0, legend_in / total_in, 1, 1 - 0.3 / total_in))
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=100))
    plt.close(fig)
    return path
