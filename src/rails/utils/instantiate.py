"""Config checking against constructor signatures, and builders for lists of callbacks/loggers."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf


class ConfigError(ValueError):
    """A config value does not fit the signature of the object it configures."""


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


def _hints(target: Any) -> tuple[inspect.Signature, dict[str, Any]]:
    func = target.__init__ if inspect.isclass(target) else target
    signature = inspect.signature(target)
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable forward references: skip type checks, keep name checks
        hints = {}
    return signature, hints


def check_config(node: Any, path: str = "") -> None:
    """Walk a config and validate every ``_target_`` node's keys and plain values against its signature.

    Raises:
        ConfigError: naming the full key, e.g. ``model.encoder.num_blocks: expected int, got 'abc'``.
    """
    if isinstance(node, ListConfig) and not node._is_none():
        for i, child in enumerate(node):
            check_config(child, f"{path}[{i}]")
        return
    if not isinstance(node, DictConfig) or node._is_none() or node._is_missing():
        return
    target_name = node.get("_target_") if "_target_" in node else None
    if target_name is not None:
        try:
            target = hydra.utils.get_object(target_name)
        except Exception as err:
            raise ConfigError(f"{path or '<root>'}._target_: cannot import {target_name!r} ({err})") from err
        signature, hints = _hints(target)
        params = signature.parameters
        accepts_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        for key in node:
            if str(key).startswith("_"):
                continue
            full = f"{path}.{key}" if path else str(key)
            if key not in params and not accepts_kwargs:
                known = ", ".join(n for n in params if n not in ("self", "args", "kwargs"))
                raise ConfigError(f"{full}: unknown key for {target_name} (accepted: {known})")
            child = node._get_node(key)
            if (
                key in params
                and not OmegaConf.is_missing(node, key)
                and not OmegaConf.is_interpolation(node, key)
            ):
                value = child._value() if not isinstance(child, (DictConfig, ListConfig)) else child
                is_object = isinstance(value, DictConfig) and "_target_" in value
                if not is_object and not _matches(value, hints.get(key, params[key].annotation)):
                    expected = hints.get(key, params[key].annotation)
                    raise ConfigError(f"{full}: expected {expected}, got {value!r} ({type(value).__name__})")
    for key in node:
        if str(key).startswith("_") or (not path and key == "hydra") or OmegaConf.is_missing(node, key):
            continue
        child = node._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)) and not OmegaConf.is_interpolation(node, key):
            check_config(child, f"{path}.{key}" if path else str(key))


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
