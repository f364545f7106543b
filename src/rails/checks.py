"""Argument rules shared by constructors and the config check.

A class may define ``check_args(args: Mapping[str, Any]) -> None`` (a staticmethod) that validates its
arguments with the helpers below and raises :class:`ArgumentError` naming the argument relative to the
object (``item_dim``, or ``similarity.query_dim`` for an argument of a nested object). The constructor
calls it with its own arguments (nested objects then being built objects; :func:`option_of` reads either),
and :func:`rails.config.check_config` calls it with the config's values before anything is built, so one
rule guards both the config and the Python API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ArgumentError(ValueError):
    """An argument value outside its domain.

    Args:
        argument: the argument's name relative to the object (dotted for a nested object's argument).
        value: the offending value.
        requirement: what the value must satisfy, e.g. ``must be >= 1``.
    """

    def __init__(self, argument: str, value: Any, requirement: str) -> None:
        self.argument = argument
        self.value = value
        self.requirement = requirement
        super().__init__(f"{argument}={value!r}: {requirement}")


def option_of(node: Any, name: str) -> Any:
    """``node[name]`` of a config mapping or ``node.name`` of a built object; None when absent.

    Lets a ``check_args`` rule read an argument of a nested object both from the config (before anything is
    built) and from the built object (in the constructor).
    """
    if isinstance(node, Mapping):
        return node.get(name)
    return getattr(node, name, None)


def require(condition: bool, argument: str, value: Any, requirement: str) -> None:
    """Raise :class:`ArgumentError` (``argument=value: requirement``) unless ``condition``."""
    if not condition:
        raise ArgumentError(argument, value, requirement)


def require_at_least(args: Mapping[str, Any], minimum: float, *names: str) -> None:
    """Every ``args[name]`` is >= ``minimum``."""
    for name in names:
        require(args[name] >= minimum, name, args[name], f"must be >= {minimum}")


def require_positive(args: Mapping[str, Any], *names: str) -> None:
    """Every ``args[name]`` is > 0."""
    for name in names:
        require(args[name] > 0, name, args[name], "must be > 0")


def require_probability(args: Mapping[str, Any], *names: str) -> None:
    """Every ``args[name]`` is a dropout rate in [0, 1)."""
    for name in names:
        require(0 <= args[name] < 1, name, args[name], "must lie in [0, 1)")
