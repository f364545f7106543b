"""Lightning DDP (subprocess launcher) under Hydra, including ``-m`` sweeps, without extra run directories.

With ``strategy=ddp`` Lightning re-executes ``sys.argv`` for local ranks >= 1, adding only
``hydra.run.dir``. Inside a Hydra sweep ``sys.argv`` still holds ``-m`` and the whole search space, so every
child rank starts a sweep of its own (new multirun directories, extra trials). :func:`child_command` builds
the command of one child rank from the *current job* instead: the job's own overrides, single-run mode, and
the job's output directory, so all ranks of a job share one run directory. :func:`hydra_safe_ddp_launch`
installs it for the duration of a ``with`` block.

Lightning has no public hook for the child command: the block replaces the private
``_hydra_subprocess_cmd`` of ``lightning.{fabric,pytorch}.strategies.launchers.subprocess_script``, whose
name, signature (``local_rank -> (command, cwd)``) and call site were read in Lightning 2.3.0 and 2.6.6.
:data:`LIGHTNING_RANGE` is the range this was written for; ``tests/test_ddp.py`` fails outside it (read the
launcher source of the new version, then widen the range), and the block warns when the function is gone.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence

from rails.log import get_logger

log = get_logger(__name__)

# Lightning versions whose subprocess launcher calls the private ``_hydra_subprocess_cmd`` as patched here.
LIGHTNING_RANGE = ("2.3", "2.7")  # >= first, < second
PATCHED = "_hydra_subprocess_cmd"
# Command-line flags of a Hydra app that take a value and must be passed on to child ranks.
_VALUE_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
# Environment variables Lightning's launcher sets in the launching process; left behind, they would make the
# next job of a sweep believe its processes are started externally (LOCAL_RANK) and never start its children.
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def _app_flags(argv: Sequence[str]) -> list[str]:
    """Keep the config-selection flags of ``argv`` (no overrides, no ``-m``)."""
    kept: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _VALUE_FLAGS and i + 1 < len(argv):
            kept += [arg, argv[i + 1]]
            i += 2
            continue
        if arg.startswith(tuple(f"{flag}=" for flag in _VALUE_FLAGS)):
            kept.append(arg)
        i += 1
    return kept


def child_command(local_rank: int) -> tuple[list[str], str]:
    """(command, cwd) that runs the current Hydra job as local rank ``local_rank`` of a DDP group."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd, to_absolute_path

    import __main__

    hydra_cfg = HydraConfig.get()
    spec = getattr(__main__, "__spec__", None)
    if spec is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", spec.name]
    command += _app_flags(sys.argv[1:])
    command += [o for o in hydra_cfg.overrides.task if not o.startswith("hydra.")]
    command += [
        f"hydra.run.dir={hydra_cfg.runtime.output_dir}",
        "hydra.mode=RUN",
        "hydra.output_subdir=null",
        f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}",
    ]
    return command, get_original_cwd()


@contextlib.contextmanager
def hydra_safe_ddp_launch() -> Iterator[None]:
    """Within the block, Lightning's subprocess DDP launcher starts child ranks with :func:`child_command`.

    On exit the launcher's environment variables are restored, so the next job of a sweep launches its own
    ranks on a fresh port.
    """
    import lightning
    from hydra.core.hydra_config import HydraConfig
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as pytorch_launcher

    if not HydraConfig.initialized() or os.environ.get("LOCAL_RANK", "0") != "0":
        yield
        return
    # Both modules hold a reference to the function (the pytorch launcher imports it from fabric's).
    modules = [m for m in (fabric_launcher, pytorch_launcher) if hasattr(m, PATCHED)]
    if len(modules) < 2:
        log.warning(
            f"lightning {lightning.__version__}: the subprocess launcher has no {PATCHED} (rails.runs.ddp was "
            f"written for >={LIGHTNING_RANGE[0]},<{LIGHTNING_RANGE[1]}); DDP child ranks of a Hydra sweep may "
            "start sweeps of their own"
        )
    originals = [getattr(m, PATCHED) for m in modules]
    saved_env = {key: os.environ.get(key) for key in _LAUNCH_ENV}
    for module in modules:
        setattr(module, PATCHED, child_command)
    try:
        yield
    finally:
        for module, original in zip(modules, originals):
            setattr(module, PATCHED, original)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
