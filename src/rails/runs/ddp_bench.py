"""The N-GPU DDP check (issue #14 item 6): epoch time on 1 vs N devices, N-device metrics vs a 1-device eval.

For each measurement point, :func:`bench` trains the same preset twice as subprocesses (``rails-train`` on one
device, then with the N-device trainer), with the optional
:class:`rails.callbacks.epoch_timer.EpochTimer`, then runs ``rails-eval`` of the N-device run's best checkpoint
on one device. A point is *strong* scaling (``global_batches``: the same global batch ``data.batch_size`` on 1 and
on N devices, i.e. the same training recipe split over the devices) or *weak* scaling (``per_gpu_batches``:
the same batch per device, so the N-device run's global batch is N times the 1-device one, as Lightning's own
per-device batch semantics would give; fewer, larger steps per epoch). From the run directories it reads:

- ``epoch_s``: mean wall seconds per training epoch, validation and the first (warm-up) epoch excluded, the
  slowest rank per epoch (:func:`epoch_seconds`);
- ``max_metric_abs_diff``: the largest ``|N-device metric - 1-device rails-eval metric|`` over every val/test
  metric of the same checkpoint (:func:`compare_metrics`);
- ``eval_sharding``: the users each rank evaluated in the N-device run's final validation: disjoint, and
  together exactly the users of the 1-device run (:func:`eval_sharding`).

The summary (:func:`summarize`) is written atomically to a JSON file after every point, so a cut-off run
keeps what it finished; ``rails.runs.ddp_bench_report`` renders it into docs/benchmarks.md.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rails.io import atomic_write
from rails.log import get_logger

log = get_logger(__name__)

TIMER = "++callbacks.epoch_timer._target_=rails.callbacks.epoch_timer.EpochTimer"
QUIET = ["trainer.enable_progress_bar=false", "++callbacks.progress_bar=null"]


@dataclass
class BenchSettings:
    """What :func:`bench` runs.

    Args:
        experiment: preset of ``conf/experiment``.
        gpus: N, devices of the distributed run.
        epochs: training epochs per run (the first is not timed; >= 2).
        global_batches: global training batch sizes of the strong-scaling points.
        per_gpu_batches: per-device batch sizes of the weak-scaling points (measured first).
        trainer_one: trainer config of the 1-device training and of ``rails-eval``.
        trainer_many: trainer config of the N-device run.
        matmul_precision: of both trainings; ``highest`` because ``rails-eval`` runs at torch's default
            (full fp32), so TF32 in training would make the comparison one of precisions.
        overrides: extra ``rails-train`` overrides for both runs (e.g. ``data.root=...``).
        tolerance: acceptance bound on ``max_metric_abs_diff``.
        min_speedup: acceptance bound on the speed-up.
        python: interpreter of the subprocesses.
        max_seconds: time budget of :func:`bench`; the batch size running when it ends is killed and left
            out (the ones finished before stay in the JSON, ``not_measured`` names the rest). None = no limit.
    """

    experiment: str = "ml_1m_seq_hstu_large_dot"
    gpus: int = 2
    epochs: int = 5
    global_batches: Sequence[int] = (128, 512)
    per_gpu_batches: Sequence[int] = ()
    trainer_one: str = "gpu"
    trainer_many: str = "ddp"
    matmul_precision: str = "highest"
    overrides: Sequence[str] = field(default_factory=list)
    tolerance: float = 1e-6
    min_speedup: float = 1.8
    python: str = sys.executable
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.gpus < 2:
            raise ValueError(f"gpus must be >= 2 for a distributed run, got {self.gpus}")
        if self.epochs < 2:
            raise ValueError(f"epochs must be >= 2 (the first epoch is not timed), got {self.epochs}")
        if not (self.global_batches or self.per_gpu_batches):
            raise ValueError("global_batches and per_gpu_batches are both empty: nothing to measure")
        if any(b < self.gpus for b in self.global_batches):
            raise ValueError(
                f"global_batches must be >= gpus ({self.gpus}) each, got {list(self.global_batches)}"
            )
        if any(b < 1 for b in self.per_gpu_batches):
            raise ValueError(f"per_gpu_batches must be >= 1 each, got {list(self.per_gpu_batches)}")

    def points(self) -> list[ScalingPoint]:
        """What :func:`bench` measures, in order (the first is the summary's headline): weak, then strong."""
        weak = [ScalingPoint("weak", b, b * self.gpus) for b in self.per_gpu_batches]
        return weak + [ScalingPoint("strong", b, b) for b in self.global_batches]


@dataclass(frozen=True)
class ScalingPoint:
    """One measurement: ``batch_one`` = global batch of the 1-device run, ``batch_many`` of the N-device run."""

    scaling: str
    batch_one: int
    batch_many: int

    @property
    def label(self) -> str:
        """``strong 128`` / ``weak 128 per GPU`` (summary keys, log lines, reasons for what was not measured)."""
        if self.scaling == "weak":
            return f"weak {self.batch_one} per GPU"
        return f"strong {self.batch_many}"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (did the run finish?)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def timer_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """The EpochTimer records of a run directory, ordered by rank.

    Raises:
        FileNotFoundError: naming the folder when there are none.
        ValueError: when the ranks found are not 0..W-1 of the recorded world size.
    """
    folder = Path(run_dir) / "epoch_timer"
    records = [_read_json(p) for p in sorted(folder.glob("rank*.json"))]
    if not records:
        raise FileNotFoundError(f"{folder}: no rank*.json (was the EpochTimer callback on?)")
    records.sort(key=lambda r: r["rank"])
    world = records[0]["world_size"]
    if [r["rank"] for r in records] != list(range(world)):
        raise ValueError(f"{folder}: ranks {[r['rank'] for r in records]} but world size {world}")
    return records


def epoch_seconds(run_dir: str | Path, skip: int = 1) -> tuple[float, list[float]]:
    """(mean seconds per timed epoch, seconds of every epoch): the slowest rank per epoch, first ``skip`` left out.

    Raises:
        ValueError: naming the run when it has no epoch after the skipped ones or ranks disagree on the count.
    """
    records = timer_records(run_dir)
    counts = {len(r["train_epoch_s"]) for r in records}
    if len(counts) != 1:
        raise ValueError(f"{run_dir}: ranks timed different numbers of epochs {sorted(counts)}")
    per_epoch = [max(values) for values in zip(*(r["train_epoch_s"] for r in records))]
    timed = per_epoch[skip:]
    if not timed:
        raise ValueError(f"{run_dir}: {len(per_epoch)} epoch(s) timed, none left after skipping {skip}")
    return sum(timed) / len(timed), per_epoch


def eval_sharding(many_run: str | Path, one_run: str | Path, stage: str = "val") -> dict[str, Any]:
    """How the N-device run's last ``stage`` evaluation was split over ranks, checked against one device.

    Returns:
        ``users_per_rank``, ``disjoint`` (no user on two ranks), ``union_equals_single`` (together exactly
        the users of the 1-device run's last ``stage`` evaluation), ``sharded`` (both, and every rank had users).
    """
    many = timer_records(many_run)
    single = timer_records(one_run)
    missing = [r["rank"] for r in many if stage not in r["eval"]] + (
        ["1-device"] if stage not in single[0]["eval"] else []
    )
    if missing:
        raise ValueError(f"{many_run}: no {stage} evaluation recorded for {missing}")
    shards = [r["eval"][stage]["users"] for r in many]
    union: set[int] = set().union(*map(set, shards))
    disjoint = sum(len(s) for s in shards) == len(union)
    equal = union == set(single[0]["eval"][stage]["users"])
    sizes = [len(s) for s in shards]
    return {
        "stage": stage,
        "ranks": len(many),
        "users_per_rank": sizes,
        "users_single": len(single[0]["eval"][stage]["users"]),
        "disjoint": disjoint,
        "union_equals_single": equal,
        "sharded": disjoint and equal and min(sizes) > 0 and len(many) > 1,
        "how": "EpochTimer: user ids each rank saw in its last evaluation pass (epoch_timer/rank<r>.json)",
    }


def compare_metrics(many: Mapping[str, float | None], single: Mapping[str, float | None]) -> dict[str, Any]:
    """``|many - single|`` per metric both have; a metric that is null (NaN) on one side only counts as inf.

    Raises:
        ValueError: when the two share no metric.
    """
    keys = sorted(set(many) & set(single))
    if not keys:
        raise ValueError(f"no common metric: {sorted(many)} vs {sorted(single)}")
    diffs: dict[str, float] = {}
    for key in keys:
        a, b = many[key], single[key]
        if a is None or b is None:
            diffs[key] = 0.0 if a is None and b is None else math.inf
        else:
            diffs[key] = abs(float(a) - float(b))
    worst = max(diffs, key=diffs.__getitem__)
    return {"max_abs_diff": diffs[worst], "worst_metric": worst, "compared": len(keys), "diffs": diffs}


def _run(command: list[str], log_file: Path, deadline: float | None = None) -> float:
    """Run ``command`` (own process group), output into ``log_file``; returns its wall seconds.

    Raises:
        RuntimeError: with the log's tail when it fails.
        TimeoutError: when ``deadline`` (``time.monotonic()``) passes first; the whole group (DDP child ranks
            included) is killed.
    """
    log.info(f"$ {shlex.join(command)}")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with log_file.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            returncode = process.wait(
                timeout=None if deadline is None else max(deadline - time.monotonic(), 0)
            )
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise TimeoutError(f"time budget spent during: {shlex.join(command)} (log {log_file})") from None
    if returncode != 0:
        tail = log_file.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"exit {returncode}: {shlex.join(command)}\n(log {log_file})\n{tail}")
    return time.perf_counter() - start


def train_command(
    settings: BenchSettings, trainer: str, devices: int, batch: int, run_dir: Path
) -> list[str]:
    """``python -m rails.train`` of one timed run."""
    return [
        settings.python, "-m", "rails.train",
        f"experiment={settings.experiment}",
        f"trainer={trainer}",
        f"trainer.devices={devices}",
        f"trainer.max_epochs={settings.epochs}",
        f"data.batch_size={batch}",
        f"matmul_precision={settings.matmul_precision}",
        TIMER, *QUIET, *settings.overrides,
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip


def eval_command(settings: BenchSettings, checkpoint: str, precision: str, run_dir: Path) -> list[str]:
    """``python -m rails.eval`` of ``checkpoint`` on one device at the training precision."""
    return [
        settings.python, "-m", "rails.eval",
        f"ckpt_path={checkpoint}",
        f"trainer={settings.trainer_one}",
        "trainer.devices=1",
        f"trainer.precision={precision}",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip


def bench_batch(
    settings: BenchSettings, point: ScalingPoint, out: Path, deadline: float | None = None
) -> dict[str, Any]:
    """1-device and N-device training of one point, then rails-eval; the measurements of one row."""
    n = settings.gpus
    root = out / (f"batch{point.batch_many}" if point.scaling == "strong" else f"per_gpu{point.batch_one}")
    one_dir, many_dir, eval_dir = root / "gpu1", root / f"gpu{n}", root / "eval1"
    commands = [train_command(settings, settings.trainer_one, 1, point.batch_one, one_dir)]
    commands.append(train_command(settings, settings.trainer_many, n, point.batch_many, many_dir))
    wall = [_run(commands[0], one_dir.with_suffix(".log"), deadline)]
    wall.append(_run(commands[1], many_dir.with_suffix(".log"), deadline))
    record = _read_json(many_dir / "run.json")
    best = record.get("best_checkpoint")
    if not best:
        raise ValueError(f"{many_dir / 'run.json'}: no best_checkpoint")
    precision = str(_trainer_precision(many_dir))
    commands.append(eval_command(settings, best, precision, eval_dir))
    wall.append(_run(commands[2], eval_dir.with_suffix(".log"), deadline))
    one_s, one_epochs = epoch_seconds(one_dir)
    many_s, many_epochs = epoch_seconds(many_dir)
    comparison = compare_metrics(_read_json(many_dir / "metrics.json"), _read_json(eval_dir / "metrics.json"))
    return {
        "scaling": point.scaling,
        "batch_1gpu": point.batch_one,
        "global_batch": point.batch_many,
        "per_gpu_batch": point.batch_many // n,
        "epoch_s": {"1": one_s, str(n): many_s},
        "epoch_s_all": {"1": one_epochs, str(n): many_epochs},
        "speedup": one_s / many_s,
        "max_metric_abs_diff": comparison["max_abs_diff"],
        "worst_metric": comparison["worst_metric"],
        "metrics_compared": comparison["compared"],
        "metric_diffs": comparison["diffs"],
        "eval_sharding": eval_sharding(many_dir, one_dir),
        "checkpoint": best,
        "gpu": record.get("system.gpu"),
        "process_wall_s": {"train_1": wall[0], f"train_{n}": wall[1], "eval_1": wall[2]},
        "commands": [shlex.join(c) for c in commands],
    }


def _trainer_precision(run_dir: Path) -> str:
    """``trainer.precision`` of a finished run (its ``.hydra/config.yaml``)."""
    from omegaconf import OmegaConf

    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (did the run finish?)")
    return str(OmegaConf.load(path).trainer.precision)


def summarize(
    settings: BenchSettings,
    rows: Sequence[Mapping[str, Any]],
    command: str | None,
    not_measured: Sequence[str] = (),
) -> dict[str, Any]:
    """The JSON of docs/bench_ddp.json: headline = the first point measured; every row under ``runs``."""
    if not rows:
        raise ValueError("no finished run to summarize")
    head = rows[0]
    return {
        "gpus": settings.gpus,
        "epoch_s": head["epoch_s"],
        "speedup": head["speedup"],
        "max_metric_abs_diff": head["max_metric_abs_diff"],
        "global_batch": head["global_batch"],
        "scaling": head.get("scaling", "strong"),
        "batch_1gpu": head.get("batch_1gpu", head["global_batch"]),
        "eval_sharded": head["eval_sharding"]["sharded"],
        "acceptance": {
            "min_speedup": settings.min_speedup,
            "tolerance": settings.tolerance,
            "speedup_met": head["speedup"] >= settings.min_speedup,
            "metrics_met": head["max_metric_abs_diff"] <= settings.tolerance,
            "speedup_met_at_global_batch": [
                r["global_batch"] for r in rows if r["speedup"] >= settings.min_speedup
            ],
            "speedup_met_at": [_label(r) for r in rows if r["speedup"] >= settings.min_speedup],
        },
        "gpu": head.get("gpu"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "experiment": settings.experiment,
        "epochs": settings.epochs,
        "timed_epochs": settings.epochs - 1,
        "trainers": {"1": settings.trainer_one, str(settings.gpus): settings.trainer_many},
        "matmul_precision": settings.matmul_precision,
        "overrides": list(settings.overrides),
        "command": command,
        "runs": list(rows),
        "not_measured": list(not_measured),
    }


def _label(row: Mapping[str, Any]) -> str:
    scaling = row.get("scaling", "strong")
    return ScalingPoint(scaling, row.get("batch_1gpu", row["global_batch"]), row["global_batch"]).label


def bench(
    settings: BenchSettings, out: str | Path, json_path: str | Path, command: str | None = None
) -> dict[str, Any]:
    """Run every point of ``settings`` under ``out``; rewrite ``json_path`` after each; the summary."""
    out = Path(out).resolve()
    deadline = None if settings.max_seconds is None else time.monotonic() + settings.max_seconds
    rows: list[dict[str, Any]] = []
    points = settings.points()
    for i, point in enumerate(points):
        try:
            rows.append(bench_batch(settings, point, out, deadline))
        except TimeoutError as error:
            log.warning(f"{error}: {[p.label for p in points[i:]]} not measured")
            if not rows:
                raise
            skipped = [f"{p.label}: time budget ({settings.max_seconds} s) spent" for p in points[i:]]
            summary = summarize(settings, rows, command, skipped)
            atomic_write(json_path, json.dumps(summary, indent=2) + "\n")
            return summary
        summary = summarize(settings, rows, command)
        atomic_write(json_path, json.dumps(summary, indent=2) + "\n")
        row = rows[-1]
        log.info(
            f"{point.label}: epoch {row['epoch_s']} s, speed-up {row['speedup']:.2f}x, "
            f"max |metric diff| {row['max_metric_abs_diff']:.2e}, sharded {row['eval_sharding']['sharded']}"
        )
    return summary
