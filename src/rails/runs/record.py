"""Run metadata sent to every logger: the resolved config, parameter counts and system information."""

from __future__ import annotations

import platform
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch

from rails.io import atomic_write


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are kept as values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def git_commit(path: str | Path | None = None) -> str | None:
    """HEAD commit of the repository containing ``path`` (this package by default), or None."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def system_info(trainer: L.Trainer | None = None) -> dict[str, Any]:
    """Host, library versions, accelerator and world size (flat ``system.*`` keys)."""
    info: dict[str, Any] = {
        "system.host": socket.gethostname(),
        "system.python": platform.python_version(),
        "system.torch": torch.__version__,
        "system.lightning": L.__version__,
        "system.cuda": torch.version.cuda,
        "system.gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "system.gpu_count": torch.cuda.device_count(),
        "system.cpu_count": torch.get_num_threads(),
        "system.git_commit": git_commit(),
    }
    if trainer is not None:
        info["system.world_size"] = trainer.world_size
        info["system.num_nodes"] = trainer.num_nodes
        info["system.precision"] = str(trainer.precision)
        info["system.strategy"] = type(trainer.strategy).__name__
    return info


def launch_command(app: str = "rails-train") -> str | None:
    """The command line that reproduces this Hydra job (``app`` + its overrides), or None outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    overrides = list(HydraConfig.get().overrides.task)
    return " ".join([app, *overrides])


def write_run_record(path: str | Path, trainer: L.Trainer, **extra: Any) -> None:
    """Atomically write ``run.json``: the launch command, system info (GPU kind, versions) and ``extra``."""
    import json

    record = {"command": launch_command(), **system_info(trainer), **extra}
    atomic_write(path, json.dumps(record, indent=2, default=str) + "\n")


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """``model/params/{total,trainable,non_trainable}``."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "model/params/total": total,
        "model/params/trainable": trainable,
        "model/params/non_trainable": total - trainable,
    }


def log_run_config(trainer: L.Trainer, model: torch.nn.Module, run_config: Mapping[str, Any]) -> None:
    """Send the resolved config, parameter counts and system info to every logger of ``trainer``."""
    if not trainer.loggers:
        return
    params = {**flatten(run_config), **parameter_counts(model), **system_info(trainer)}
    for logger in trainer.loggers:
        logger.log_hyperparams(params)
