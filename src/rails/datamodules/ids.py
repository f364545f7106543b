"""The id rule of user-supplied data: integer ids >= 1 are kept, every other raw id is remapped stably.

Item id 0 is padding, so raw ids must become int64 ids >= 1. For a set of distinct raw ids (text tokens
or numbers):

1. a raw id that is an integer >= 1 keeps its value: a number, or text made of decimal digits without a
   sign and without leading zeros (``"42"``, not ``"+42"`` or ``"042"``), below 2**53;
2. every other raw id (``"B00004U9V2"``, ``"0"``, ``"-3"``, ``"042"``) gets the ids ``M + 1, M + 2, ...``
   where ``M`` is the largest kept id (0 when none), in the sorted order of its text.

The rule depends only on the set of raw ids, not on the order of the rows, so the same input always gives
the same ids. ``items.parquet`` keeps each id's raw text in its ``raw_id`` column.
"""

from __future__ import annotations

import logging
import re

import numpy as np

log = logging.getLogger(__name__)

_CANONICAL_INT = re.compile(r"[1-9][0-9]{0,15}")
MAX_KEPT_ID = 2**53


def kept_integer(value: object) -> int | None:
    """The id ``value`` keeps under the rule above, or None when it is remapped."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value) if 1 <= int(value) < MAX_KEPT_ID else None
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() and 1 <= value < MAX_KEPT_ID else None
    text = str(value)
    if _CANONICAL_INT.fullmatch(text) and int(text) < MAX_KEPT_ID:
        return int(text)
    return None


def raw_text(value: object) -> str:
    """The text of a raw id (integral floats from a numeric column print without ``.0``)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def assign_ids(distinct: np.ndarray | list) -> np.ndarray:
    """Ids of distinct raw ids under the module's rule.

    Args:
        distinct: (V,) distinct raw ids (strings or numbers).

    Returns:
        (V,) int64 ids, all >= 1 and distinct.
    """
    ids = np.zeros(len(distinct), dtype=np.int64)
    remapped: list[tuple[str, int]] = []
    for position, value in enumerate(distinct):
        kept = kept_integer(value)
        if kept is None:
            remapped.append((raw_text(value), position))
        else:
            ids[position] = kept
    start = int(ids.max(initial=0))
    for offset, (_, position) in enumerate(sorted(remapped)):
        ids[position] = start + 1 + offset
    return ids


def warn_if_sparse(ids: np.ndarray, what: str) -> None:
    """Log a warning when kept integer ids make the id range much larger than the number of ids.

    Item ids index the embedding table (max id + 1 rows), so e.g. 10,000 items with ids near 10^9 would
    allocate a billion rows.
    """
    largest = int(ids.max(initial=0))
    if largest > 1_000_000 and largest > 10 * len(ids):
        log.warning(
            "%s: %s distinct ids but the largest is %s: integer ids >= 1 are kept, so tables indexed by id "
            "get %s rows. Give the ids a non-numeric prefix to have them remapped to 1..%s.",
            what,
            f"{len(ids):,}",
            f"{largest:,}",
            f"{largest + 1:,}",
            f"{len(ids):,}",
        )
