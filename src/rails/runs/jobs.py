"""Job wrapper for Hydra apps: the config is checked first, and a failed sweep job becomes a failed trial
instead of killing the sweep."""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from rails.config import check_config
from rails.io import atomic_write

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FailedTrial:
    """What a sweep job returns when it has no score: it raised, or its optimised metric is missing or not finite.

    Sweepers read it as a failed trial: ``float()`` raises ValueError, which hydra-optuna-sweeper (1.2, 1.3)
    answers by telling Optuna ``TrialState.FAIL`` and going on with the next trial (a NaN score, by
    contrast, is told as a value, rejected by Optuna, and stops the sweep). The basic sweeper ignores
    return values.

    Args:
        reason: one line saying why, e.g. ``RuntimeError: CUDA out of memory``.
    """

    reason: str

    def __float__(self) -> float:
        raise ValueError(str(self))

    def __str__(self) -> str:
        return f"trial failed ({self.reason})"


def in_multirun() -> bool:
    """True inside a job of a Hydra multirun (``-m`` or a sweeper config)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def finish_wandb(exit_code: int = 0) -> None:
    """Close the current W&B run, if any (each sweep job must get a run of its own), and wait for its files.

    ``wandb.finish`` can return before the W&B service has flushed the run's ``.wandb`` file (offline
    runs: seen empty on a slow machine), so the service is torn down too: when this returns, the run
    files are complete and can be synced or read, also when the process does not exit normally (a
    launcher's worker). The next job starts a fresh service.
    """
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)
        wandb.teardown(exit_code=exit_code)


def release_process_group() -> None:
    """Destroy the default ``torch.distributed`` process group, if any (the next sweep job builds its own)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def score(metrics: Mapping[str, float], name: str) -> float | FailedTrial:
    """``metrics[name]`` if it is a finite number, else a :class:`FailedTrial` saying what is wrong."""
    if name not in metrics:
        return FailedTrial(f"optimized_metric={name!r} was not computed (have: {sorted(metrics)})")
    value = float(metrics[name])
    if not math.isfinite(value):
        return FailedTrial(f"optimized_metric={name!r} is {value}")
    return value


def run_job(task: Callable[[DictConfig], Mapping[str, float]], cfg: DictConfig) -> float | FailedTrial | None:
    """Check ``cfg``, run ``task(cfg)`` and return ``cfg.optimized_metric`` from its metrics (for sweepers).

    The config is checked (:func:`rails.config.check_config`) before the task runs, so a bad value
    fails before anything is seeded, prepared or built. In a multirun a raised exception is logged, its
    traceback written to ``<output_dir>/error.txt`` and the job returns a :class:`FailedTrial` (Optuna
    records the trial as failed and continues; the basic sweeper moves on); so does a job whose optimised
    metric is missing or not finite (the reason goes to ``error.txt``, which marks the job failed in the
    sweep summary). Outside a multirun the exception propagates (non-zero exit status). The W&B run is
    finished and the DDP process group destroyed in every case.
    """
    name = cfg.get("optimized_metric")
    exit_code = 0
    try:
        check_config(cfg)
        metrics = task(cfg)
    except Exception as err:
        exit_code = 1
        if not in_multirun():
            raise
        output_dir = Path(cfg.paths.output_dir)
        log.error(f"job failed ({type(err).__name__}: {err}); traceback in {output_dir / 'error.txt'}")
        atomic_write(output_dir / "error.txt", traceback.format_exc())
        first_line = next(iter(str(err).splitlines()), "")
        return FailedTrial(f"{type(err).__name__}: {first_line}") if name else None
    finally:
        finish_wandb(exit_code)
        release_process_group()
    if not name:
        return None
    result = score(metrics, name)
    if isinstance(result, FailedTrial):
        log.warning(f"{result}; the job counts as failed")
        atomic_write(Path(cfg.paths.output_dir) / "error.txt", f"{result}\n")
    return result
