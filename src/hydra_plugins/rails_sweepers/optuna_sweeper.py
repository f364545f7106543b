"""RailsOptunaSweeper: hydra-optuna-sweeper's OptunaSweeper for sweeps in which trials may fail.

What the installed plugin (hydra-optuna-sweeper 1.2 / 1.3, ``_impl.OptunaSweeperImpl.sweep``) does with a
trial's result:

- a float-castable finite return value: ``study.tell(value)`` (COMPLETE);
- a NaN (or inf) return value: ``study.tell(nan)`` raises inside Optuna, the plugin's fallback then calls
  ``study.tell(state=FAIL, values=[nan])``, which Optuna rejects (``ValueError: Values were told...``),
  and the whole sweep stops with no summary;
- a return value whose ``float()`` raises: ``study.tell(state=FAIL)`` and the sweep goes on;
- a job that raised: ``study.tell(state=FAIL)``, then the plugin re-raises it when the failures of the
  batch exceed ``max_failure_rate`` (with ``n_jobs: 1`` a single failure is a whole batch);
- after the last trial, ``study.best_trial`` raises when no trial completed.

``rails-train`` jobs never raise in a multirun and return a :class:`rails.runs.jobs.FailedTrial` (whose
``float()`` raises) when they fail, so the plugin tells Optuna FAIL and goes on; ``max_failure_rate`` then
only guards against crashes outside the job. This subclass handles the last case: when every trial failed
it logs so and returns normally, so that the end-of-sweep callbacks (``SweepSummary``) still write the
table of failures instead of the sweep dying on ``best_trial``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

log = logging.getLogger(__name__)

try:  # the plugin is the optional extra `sweep`; without it Hydra must still scan this module quietly
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # pragma: no cover - exercised only without hydra-optuna-sweeper
    OptunaSweeper = None


if OptunaSweeper is not None:

    class RailsOptunaSweeper(OptunaSweeper):
        """OptunaSweeper (same config keys) whose sweep ends normally when every trial failed."""

        def setup(
            self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
        ) -> None:
            self._sweep_dir = Path(config.hydra.sweep.dir)
            super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

        def sweep(self, arguments: list[str]) -> Any:
            from rails.callbacks.summary import collect_jobs

            try:
                return super().sweep(arguments)
            except ValueError:
                jobs = collect_jobs(self._sweep_dir)
                if not jobs or any(job["status"] != "failed" for job in jobs):
                    raise
                log.error(
                    f"every trial of the sweep failed ({len(jobs)} jobs; tracebacks in "
                    f"{self._sweep_dir}/<job>/error.txt): no best trial"
                )
                return None
