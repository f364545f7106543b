"""W&B logger for rails: offline unless credentials exist, sweep jobs grouped, resolved config logged."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch.loggers import WandbLogger

Mode = Literal["auto", "online", "offline", "disabled"]


def wandb_credentials_available() -> bool:
    """True when ``WANDB_API_KEY`` is set or ``~/.netrc`` (or ``$NETRC``) has an entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1].split("/")[0]
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return path.is_file() and netrc.netrc(path).authenticators(host) is not None
    except (netrc.NetrcParseError, OSError):
        return False


def resolve_mode(mode: Mode) -> str:
    """``WANDB_MODE`` wins; ``auto`` means online with credentials and offline (syncable later) without."""
    env = os.environ.get("WANDB_MODE")
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    if mode == "auto":
        return "online" if wandb_credentials_available() else "offline"
    return mode


def sweep_group(default: str | None) -> str | None:
    """``<task>/<sweep dir name>`` for jobs of a Hydra multirun (so a sweep is one W&B group), else ``default``."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return default
        cfg = HydraConfig.get()
        if cfg.mode != RunMode.MULTIRUN:
            return default
        return f"{cfg.job.name}/{Path(cfg.sweep.dir).name}"
    except Exception:
        return default


class RailsWandbLogger(WandbLogger):
    """``WandbLogger`` with an ``auto`` mode and automatic sweep grouping.

    Args:
        project: W&B project.
        entity: team or user (None = the account's default).
        group: run group; None groups the jobs of a Hydra sweep by sweep directory.
        tags: run tags.
        name: display name (None = W&B's generated name).
        save_dir: directory of the ``wandb/`` run folders (offline runs: ``wandb sync <save_dir>/wandb/offline-run-*``).
        mode: ``auto`` (online with credentials, else offline), ``online``, ``offline`` or ``disabled``;
            the ``WANDB_MODE`` environment variable overrides it.
        job_type: W&B job type.
        id: run id, to resume logging into an existing run.
        **kwargs: passed to ``WandbLogger`` / ``wandb.init`` (``notes``, ``resume``, ...).
    """

    def __init__(
        self,
        project: str = "rails",
        entity: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        name: str | None = None,
        save_dir: str = ".",
        mode: Mode = "auto",
        job_type: str = "train",
        id: str | None = None,  # noqa: A002 (wandb's name)
        **kwargs: Any,
    ) -> None:
        if mode not in ("auto", "online", "offline", "disabled"):
            raise ValueError(f"logger.wandb.mode must be auto, online, offline or disabled, got {mode!r}")
        if kwargs.get("log_model"):
            raise ValueError(
                "logger.wandb.log_model is not used by rails: set callbacks.wandb.log_checkpoints=true "
                "(works offline too)"
            )
        resolved = resolve_mode(mode)
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(
            project=project,
            entity=entity,
            group=group if group is not None else sweep_group(None),
            tags=list(tags) if tags else None,
            name=name,
            save_dir=save_dir,
            offline=resolved == "offline",
            mode=resolved,
            job_type=job_type,
            id=id,
            **kwargs,
        )
        self.resolved_mode = resolved
