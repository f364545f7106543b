"""Temporary: moved to rails.checks/rails.config; removed at the end of #15.

Re-exports the argument rules (:mod:`rails.checks`) and the config check (:mod:`rails.config`) for the modules
that still import them from here.
"""

from rails.checks import (
    ArgumentError,
    option_of,
    require,
    require_at_least,
    require_positive,
    require_probability,
)
from rails.config import ConfigError, RunKeys, check_config, instantiate_dict

__all__ = [
    "ArgumentError",
    "ConfigError",
    "RunKeys",
    "check_config",
    "instantiate_dict",
    "option_of",
    "require",
    "require_at_least",
    "require_positive",
    "require_probability",
]
