"""JobConsoleToFile: a Hydra callback that gives every job of a parallel sweep its own console file.

With the joblib launcher (``hydra/launcher=parallel``) N jobs run at once in worker processes that share the
terminal of ``rails-train -m``: progress bars, Lightning messages and metrics tables of different jobs
would interleave. In such a worker this callback points file descriptors 1 and 2 (stdout and stderr, also
of C/C++ code: Triton, NCCL) at ``<job dir>/console.log`` for the duration of the job, framed by a start
line and an end line with the job's overrides, timestamps and status. The terminal keeps the launcher's
lines and the sweep summary. In the process that started the sweep (basic launcher, single runs) and
under other launchers it does nothing.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


class JobConsoleToFile(Callback):
    """Redirect a parallel job's stdout and stderr into ``<job dir>/<filename>``.

    Args:
        filename: file name inside the job's output directory (appended to, so a rerun keeps the old text).
    """

    def __init__(self, filename: str = "console.log") -> None:
        if not filename or Path(filename).name != filename:
            raise ValueError(
                f"hydra.callbacks.job_console.filename must be a plain file name, got {filename!r}"
            )
        self.filename = filename
        self._sweep_pid = os.getpid()  # the callback is built in the process that launches the jobs
        self._saved: tuple[int, int] | None = None

    def _active(self, config: DictConfig) -> bool:
        launcher = config.hydra.get("launcher") or {}
        return os.getpid() != self._sweep_pid and launcher.get("_target_") == JOBLIB_LAUNCHER

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self._active(config) or self._saved is not None:
            return
        path = Path(config.hydra.runtime.output_dir) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._saved = (os.dup(1), os.dup(2))
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        overrides = " ".join(config.hydra.overrides.task)
        print(f"[{_stamp()}] job {config.hydra.job.num} started (pid {os.getpid()}): {overrides}", flush=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if self._saved is None:
            return
        status = getattr(job_return.status, "name", str(job_return.status))
        if (Path(config.hydra.runtime.output_dir) / "error.txt").is_file():  # rails.runs.jobs.run_job
            status = "FAILED (error.txt)"
        print(f"[{_stamp()}] job {config.hydra.job.num} ended: {status}", flush=True)
        sys.stderr.flush()
        stdout_fd, stderr_fd = self._saved
        os.dup2(stdout_fd, 1)
        os.dup2(stderr_fd, 2)
        os.close(stdout_fd)
        os.close(stderr_fd)
        self._saved = None
