"""The one-change screens of a GPU round side by side (``scripts/screen_report.py``).

A round folder (``results/runs/<date>-<kind>-<round>/``, the layout of ``scripts/ingest_runs.py``) holds one
folder per screen, ``<screen>/<job>/`` with a finished run each. A screen's row gives, as the mean over its jobs,
the test HR@10 / NDCG@10, their ratio to a reference screen of the same round, the validation NDCG@10 at chosen
epochs (how the curves compare, not just where they end), the best epoch and the mean training loss of the last
epochs trained (whether a head fits the training sequences better or worse than the reference).
Screens known only by their validation curves (runs stopped before their test, ``results/partial/``) get
validation-only rows from ``curve_rows`` (``scripts/curve_report.py``).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from rails.results import Run
from rails.results_curves import MONITOR, Curve, read_train_loss

TEST_METRICS = ("test/hr@10", "test/ndcg@10")


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def _stdev(values: Iterable[float | None]) -> float | None:
    """Sample standard deviation of the values that are not None; None for fewer than two."""
    kept = [v for v in values if v is not None]
    return statistics.stdev(kept) if len(kept) > 1 else None


def _last_epochs_loss(run: Run, window: int) -> float | None:
    path = run.path / "epochs.csv"
    if not path.is_file():
        return None
    trained = run.record.get("epochs")
    losses = read_train_loss(path, int(trained) if trained is not None else None)
    tail = sorted(losses)[-window:]
    return statistics.fmean(losses[e] for e in tail) if tail else None


def screen_rows(runs: Iterable[Run], epochs: Sequence[int], loss_window: int = 5) -> list[dict[str, Any]]:
    """One row per screen folder (the parent of the job folders), sorted by name.

    Each row: ``screen``, ``head``, ``jobs``, ``test`` (``{metric: mean}`` over TEST_METRICS), ``test_std``
    (``{metric: sample std}``, None for one job), ``val``
    (``{epoch: mean val/ndcg@10}``, None where no job reached that epoch), ``best_epoch`` (mean) and ``loss``
    (the mean training loss of the last ``loss_window`` epochs trained, averaged over the jobs).
    """
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.path.parent.name].append(run)
    rows = []
    for screen, members in sorted(groups.items()):
        curves = [run.curve or {} for run in members]
        rows.append(
            {
                "screen": screen,
                "head": members[0].identity[2],
                "jobs": len(members),
                "test": {m: _mean(run.metrics.get(m) for run in members) for m in TEST_METRICS},
                "test_std": {m: _stdev(run.metrics.get(m) for run in members) for m in TEST_METRICS},
                "val": {e: _mean(c.get(e, {}).get(MONITOR) for c in curves) for e in epochs},
                "best_epoch": _mean(run.best_epoch for run in members),
                "loss": _mean(_last_epochs_loss(run, loss_window) for run in members),
            }
        )
    return rows


def _number(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _reference_row(
    rows: Sequence[dict[str, Any]], reference: str | None, where: str
) -> dict[str, Any] | None:
    """The row named ``reference`` (None for None).

    Raises:
        KeyError: naming the reference and the screens when no row has that name.
    """
    if reference is None:
        return None
    ref = next((row for row in rows if row["screen"] == reference), None)
    if ref is None:
        names = ", ".join(row["screen"] for row in rows)
        raise KeyError(f"reference screen {reference!r} is not {where} (screens: {names})")
    return ref


def screen_markdown(
    rows: Sequence[dict[str, Any]], reference: str | None, epochs: Sequence[int], loss_window: int = 5
) -> str:
    """A Markdown table of ``screen_rows``; with ``reference`` (a screen's name), each test metric's ratio to it.

    Raises:
        KeyError: naming the reference and the screens when no row has that name.
    """
    ref = _reference_row(rows, reference, "in this round")
    ratio_cells = [f"{m.split('/')[1]} / ref" for m in TEST_METRICS] if ref else []
    header = (
        ["screen", "head", "jobs", *TEST_METRICS, *ratio_cells]
        + [f"val NDCG@10 ep {e}" for e in epochs]
        + ["best epoch", f"train loss (last {loss_window} ep)"]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"`{row['screen']}`", row["head"], str(row["jobs"])]
        for m in TEST_METRICS:  # mean, ± the jobs' sample std when there are several
            std = row["test_std"][m]
            cells.append(_number(row["test"][m]) + ("" if std is None else f" ± {std:.4f}"))
        if ref:
            for m in TEST_METRICS:
                mine, theirs = row["test"][m], ref["test"][m]
                cells.append("–" if mine is None or not theirs else f"{mine / theirs:.3f}")
        cells += [_number(row["val"][e]) for e in epochs]
        cells += [_number(row["best_epoch"], 0), _number(row["loss"], 3)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def curve_rows(
    screens: Sequence[tuple[str, Sequence[Curve]]], epochs: Sequence[int], up_to: int | None = None
) -> list[dict[str, Any]]:
    """Validation-only rows of screens known by their per-epoch curves (e.g. runs stopped before their test).

    Args:
        screens: ``(name, curves)`` per screen, one curve per job (``rails.results_curves.read_epochs_csv``).
        epochs: the epochs whose mean ``val/ndcg@10`` each row shows.
        up_to: the best epoch is looked for at epochs <= ``up_to`` only (None: every epoch a job reached), so
            screens stopped at different epochs are compared over the same span.

    Returns:
        One row per screen, in the given order: ``screen``, ``jobs``, ``last_epoch`` (the fewest epochs a job
        reached), ``val`` (``{epoch: mean val/ndcg@10}``, None where a job did not reach it), ``best`` (``{metric:
        mean over jobs}`` of ``val/ndcg@10`` and ``val/hr@10`` at each job's best ``val/ndcg@10`` epoch) and
        ``best_epoch`` (mean).

    Raises:
        ValueError: naming the screen when it has no curve or no validation epoch within ``up_to``.
    """
    rows = []
    for name, curves in screens:
        if not curves:
            raise ValueError(f"screen {name!r}: no curve")
        bests = []
        for curve in curves:
            span = [e for e in curve if MONITOR in curve[e] and (up_to is None or e <= up_to)]
            if not span:
                raise ValueError(f"screen {name!r}: a job has no {MONITOR} at or before epoch {up_to}")
            bests.append(max(span, key=lambda e, c=curve: (c[e][MONITOR], -e)))
        rows.append(
            {
                "screen": name,
                "jobs": len(curves),
                "last_epoch": min(max(curve) for curve in curves),
                "val": {
                    e: None
                    if any(e not in c for c in curves)
                    else statistics.fmean(c[e][MONITOR] for c in curves)
                    for e in epochs
                },
                "best": {
                    m: _mean(c[b].get(m) for c, b in zip(curves, bests, strict=True))
                    for m in (MONITOR, "val/hr@10")
                },
                "best_epoch": statistics.fmean(bests),
            }
        )
    return rows


def curve_markdown(rows: Sequence[dict[str, Any]], reference: str | None, epochs: Sequence[int]) -> str:
    """A Markdown table of ``curve_rows``; with ``reference`` (a screen's name), the best values' ratio to it.

    Raises:
        KeyError: naming the reference and the screens when no row has that name.
    """
    ref = _reference_row(rows, reference, "among the screens")
    best = (MONITOR, "val/hr@10")
    header = ["screen", "jobs", "last epoch (every job)", *[f"best {m}" for m in best]]
    header += [f"{m.split('/')[1]} / ref" for m in best] if ref else []
    header += [f"val NDCG@10 ep {e}" for e in epochs] + ["best epoch"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"`{row['screen']}`", str(row["jobs"]), str(row["last_epoch"])]
        cells += [_number(row["best"][m]) for m in best]
        if ref:
            for m in best:
                mine, theirs = row["best"][m], ref["best"][m]
                cells.append("–" if mine is None or not theirs else f"{mine / theirs:.3f}")
        cells += [_number(row["val"][e]) for e in epochs] + [_number(row["best_epoch"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
