"""Configs of the Hydra apps: where ``conf/`` is, the check of a config before anything is built, and builders
for ``name: config`` mappings (callbacks, loggers).

:func:`check_config` runs before anything is built. For every ``_target_`` node it checks, in two passes over
the whole config:

1. keys and types: every key is an argument of the target's signature and every plain value (interpolations
   resolved) matches its annotation; the run-level keys of the primary config (``seed``, ``train``, ...)
   are checked against :class:`RunKeys`;
2. argument rules: a target may define ``check_args(args: Mapping[str, Any]) -> None`` (a staticmethod, see
   :mod:`rails.checks`), called with every argument of its signature (defaults filled in, interpolations
   resolved, nested ``_target_`` nodes as plain mappings). It raises :class:`~rails.checks.ArgumentError`
   naming the argument relative to the object, and :func:`check_config` reports the full key, e.g.
   ``model.item_dim=0: must be >= 1``.
"""

from __future__ import annotations

import inspect
import os
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rails.checks import ArgumentError


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


def compose_config(
    config_name: str = "train", overrides: Sequence[str] = (), return_hydra_config: bool = False
) -> DictConfig:
    """Compose a primary config of :func:`config_dir` with command-line style overrides, outside a Hydra app.

    For scripts and tests: the same composition ``rails-train <overrides>`` does, without running anything.
    Hydra's global state is reset first.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(
            config_name=config_name, overrides=list(overrides), return_hydra_config=return_hydra_config
        )


class ConfigError(ValueError):
    """A config value does not fit the signature or the argument rules of the object it configures."""


class RunKeys(TypedDict, total=False):
    """The run-level keys of ``conf/train.yaml`` / ``conf/eval.yaml`` (the schema :func:`check_config` uses)."""

    seed: int | None
    train: bool
    test: bool
    ckpt_path: str | None
    optimized_metric: str | None
    matmul_precision: Literal["highest", "high", "medium"] | None
    task_name: str
    tags: list[str] | None


def _matches(value: Any, annotation: Any) -> bool:
    """Best-effort check of a plain config value against a type annotation (unknown annotations pass)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence, typing.Sequence) or annotation in (list, tuple):
        return isinstance(value, (list, tuple, ListConfig))
    if origin in (dict, Mapping, typing.Mapping) or annotation is dict:
        return isinstance(value, (dict, DictConfig))
    return True


def _type_name(annotation: Any) -> str:
    """``int``, ``int | None``, ``Literal['l2', 'none']`` (for messages)."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _hints(target: Any) -> tuple[inspect.Signature, dict[str, Any]]:
    func = target.__init__ if inspect.isclass(target) else target
    signature = inspect.signature(target)
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable forward references: skip type checks, keep name checks
        hints = {}
    return signature, hints


_UNRESOLVED = object()


def _plain_value(node: DictConfig, key: Any) -> Any:
    """The value of ``node[key]`` with interpolations resolved; ``_UNRESOLVED`` if it cannot be resolved."""
    child = node._get_node(key)
    try:
        if isinstance(child, (DictConfig, ListConfig)):
            return child if not OmegaConf.is_interpolation(node, key) else node[key]
        return node[key]
    except OmegaConfBaseException:  # e.g. ${hydra:...} outside a Hydra app; reported when it is used
        return _UNRESOLVED


def _target_nodes(node: Any, path: str) -> Iterator[tuple[str, DictConfig]]:
    """Every ``_target_`` node below ``node`` (pre-order), with its full key."""
    if isinstance(node, ListConfig) and not node._is_none():
        for i, child in enumerate(node):
            yield from _target_nodes(child, f"{path}[{i}]")
        return
    if not isinstance(node, DictConfig) or node._is_none() or node._is_missing():
        return
    if "_target_" in node and node.get("_target_") is not None:
        yield path, node
    for key in node:
        if str(key).startswith("_") or (not path and key == "hydra") or OmegaConf.is_missing(node, key):
            continue
        child = node._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)) and not OmegaConf.is_interpolation(node, key):
            yield from _target_nodes(child, f"{path}.{key}" if path else str(key))


def _import_target(path: str, node: DictConfig) -> Any:
    target_name = node.get("_target_")
    try:
        return hydra.utils.get_object(target_name)
    except Exception as err:
        raise ConfigError(f"{path or '<root>'}._target_: cannot import {target_name!r} ({err})") from err


def _check_keys_and_types(path: str, node: DictConfig, target: Any) -> None:
    signature, hints = _hints(target)
    params = signature.parameters
    accepts_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key in node:
        if str(key).startswith("_"):
            continue
        full = f"{path}.{key}" if path else str(key)
        if key not in params and not accepts_kwargs:
            known = ", ".join(n for n in params if n not in ("self", "args", "kwargs"))
            raise ConfigError(f"{full}: unknown key for {node.get('_target_')} (accepted: {known})")
        if key not in params or OmegaConf.is_missing(node, key):
            continue
        value = _plain_value(node, key)
        is_object = isinstance(value, DictConfig) and "_target_" in value
        expected = hints.get(key, params[key].annotation)
        if value is not _UNRESOLVED and not is_object and not _matches(value, expected):
            raise ConfigError(
                f"{full}: expected {_type_name(expected)}, got {value!r} ({type(value).__name__})"
            )


def _check_arguments(path: str, node: DictConfig, target: Any) -> None:
    """Call ``target.check_args`` with the node's resolved arguments over the signature's defaults."""
    check = getattr(target, "check_args", None)
    if check is None:
        return
    try:
        given = OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException:  # a mandatory (???) or unresolvable value: nothing to check yet
        return
    args = {
        name: p.default
        for name, p in inspect.signature(target).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    args.update({k: v for k, v in given.items() if not str(k).startswith("_")})  # type: ignore[union-attr]
    try:
        check(args)
    except ArgumentError as err:
        key = f"{path}.{err.argument}" if path else err.argument
        raise ConfigError(f"{key}={err.value!r}: {err.requirement}") from err


def _check_run_keys(cfg: DictConfig) -> None:
    hints = typing.get_type_hints(RunKeys)
    for key, expected in hints.items():
        if key not in cfg or OmegaConf.is_missing(cfg, key):
            continue
        value = _plain_value(cfg, key)
        if value is not _UNRESOLVED and not _matches(value, expected):
            raise ConfigError(
                f"{key}: expected {_type_name(expected)}, got {value!r} ({type(value).__name__})"
            )


def check_config(node: Any, path: str = "") -> None:
    """Validate a config before anything is built (see the module docstring).

    Args:
        node: the composed config (or a part of it).
        path: the full key of ``node`` (for messages).

    Raises:
        ConfigError: naming the full key and the value, e.g. ``model.encoder.num_blocks: expected int, got
            'abc'`` or ``model.similarity.query_dim=32: must equal the encoder width (encoder.dim=16)``.
    """
    if not path and isinstance(node, DictConfig) and "_target_" not in node:
        _check_run_keys(node)
    nodes = [(p, n, _import_target(p, n)) for p, n in _target_nodes(node, path)]
    for node_path, target_node, target in nodes:
        _check_keys_and_types(node_path, target_node, target)
    for node_path, target_node, target in nodes:
        _check_arguments(node_path, target_node, target)


def instantiate_dict(node: DictConfig | None, what: str) -> list[Any]:
    """Instantiate every ``_target_`` entry of a ``name: config`` mapping (callbacks, loggers)."""
    if node is None:
        return []
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{what} must be a mapping of name -> config, got {type(node).__name__}")
    return [
        hydra.utils.instantiate(conf)
        for conf in node.values()
        if isinstance(conf, DictConfig) and "_target_" in conf
    ]
