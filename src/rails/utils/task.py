"""Job wrapper for Hydra apps: a failed sweep job is logged and scored NaN instead of killing the sweep."""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path

from omegaconf import DictConfig

from rails.utils.logging import atomic_write_text

log = logging.getLogger(__name__)


def in_multirun() -> bool:
    """True inside a job of a Hydra multirun (``-m`` or a sweeper config)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def finish_wandb(exit_code: int = 0) -> None:
    """Close the current W&B run, if any (each sweep job must get a run of its own)."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def release_process_group() -> None:
    """Destroy the default ``torch.distributed`` process group, if any (the next sweep job builds its own)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def run_job(task: Callable[[DictConfig], Mapping[str, float]], cfg: DictConfig) -> float | None:
    """Run ``task(cfg)`` and return ``cfg.optimized_metric`` from its metrics (for sweepers).

    In a multirun a raised exception is logged, its traceback written to ``<output_dir>/error.txt`` and the
    job scored NaN (Optuna marks the trial failed and continues; the basic sweeper moves on). Outside a
    multirun the exception propagates (non-zero exit status). The W&B run is finished and the DDP process
    group destroyed in every case.
    """
    name = cfg.get("optimized_metric")
    exit_code = 0
    try:
        metrics = task(cfg)
    except Exception as err:
        exit_code = 1
        if not in_multirun():
            raise
        output_dir = Path(cfg.paths.output_dir)
        log.error(f"job failed ({type(err).__name__}: {err}); traceback in {output_dir / 'error.txt'}")
        atomic_write_text(output_dir / "error.txt", traceback.format_exc())
        return math.nan if name else None
    finally:
        finish_wandb(exit_code)
        release_process_group()
    if not name:
        return None
    if name not in metrics:
        log.warning(f"optimized_metric={name!r} was not computed (have: {sorted(metrics)}); returning NaN")
        return math.nan
    return float(metrics[name])
