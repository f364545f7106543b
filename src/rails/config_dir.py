"""Locate the ``conf/`` directory of the Hydra apps (repository checkout or ``RAILS_CONFIG_DIR``)."""

from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> str:
    """Absolute path of the config directory; ``RAILS_CONFIG_DIR`` wins over the checkout's ``conf/``."""
    override = os.environ.get("RAILS_CONFIG_DIR")
    candidates = [Path(override)] if override else []
    candidates += [Path(__file__).resolve().parents[2] / "conf", Path.cwd() / "conf"]
    for candidate in candidates:
        if (candidate / "train.yaml").is_file():
            return str(candidate.resolve())
    raise FileNotFoundError(
        "rails configs not found: install rails editable from a checkout (pip install -e .) or set RAILS_CONFIG_DIR"
    )
