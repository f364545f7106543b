"""Strict readers of per-user sequence text files and item catalogues; errors name file, line and field.

Field numbers count from 1 on each line, the user id being field 1 (so a user's k-th item is field k + 1).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_INT = re.compile(r"[+-]?[0-9]+")
CATALOG_SEPARATORS = ("::", "\t", ";", ",", "|")


@dataclass
class SequenceLines:
    """The user lines of one sequence file.

    Attributes:
        path: the file.
        numbers: (U,) 1-based line number of each user line.
        users: (U,) raw user id tokens.
        lengths: (U,) int64 values per user (the tokens after the user id).
        values: (R,) every value token, users concatenated in file order (R = lengths.sum()).
    """

    path: Path
    numbers: list[int]
    users: list[str]
    lengths: np.ndarray
    values: list[str]

    def locate(self, row: int) -> tuple[int, int]:
        """(line number, field number) of value ``row`` (0-based over ``values``)."""
        ends = np.cumsum(self.lengths)
        user = int(np.searchsorted(ends, row, side="right"))
        return self.numbers[user], row - int(ends[user] - self.lengths[user]) + 2


def text_lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text without line ending) of the non-blank lines of ``path``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes)")
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}, line {number}: not valid {encoding} text ({err})") from err
            text = text.rstrip("\r\n")
            if number == 1:
                text = text.removeprefix("\ufeff")  # a byte-order mark is not part of the first id
            if text.strip():
                yield number, text


def read_sequence_file(path: Path, encoding: str = "utf-8") -> SequenceLines:
    """Read ``user v_1 ... v_n`` lines; every user appears once and has at least one value.

    Raises:
        ValueError: empty file, a user line without values, a user on two lines (both lines named).
    """
    numbers: list[int] = []
    users: list[str] = []
    lengths: list[int] = []
    values: list[str] = []
    first_line: dict[str, int] = {}
    for number, text in text_lines(path, encoding):
        tokens = text.split()
        user = tokens[0]
        if len(tokens) == 1:
            raise ValueError(f"{path}, line {number}: user {user!r} has no items (empty user line)")
        if user in first_line:
            raise ValueError(
                f"{path}, line {number}: user {user!r} already has a line (line {first_line[user]}); "
                "each user must appear on exactly one line"
            )
        first_line[user] = number
        numbers.append(number)
        users.append(user)
        lengths.append(len(tokens) - 1)
        values.extend(tokens[1:])
    if not users:
        raise ValueError(f"{path} holds no user lines")
    return SequenceLines(path, numbers, users, np.asarray(lengths, dtype=np.int64), values)


def parse_timestamps(stamps: SequenceLines, items: SequenceLines) -> np.ndarray:
    """(R,) int64 timestamps of ``items``' interactions from the parallel timestamps file.

    Raises:
        ValueError: a different number of users, a different user or number of values on a line (ragged),
            a value that is not an integer, or a timestamp smaller than the one before it.
    """
    if len(stamps.users) != len(items.users):
        raise ValueError(
            f"{stamps.path} has {len(stamps.users):,} user lines but {items.path} has {len(items.users):,}: "
            "the timestamps file must list the same users in the same order"
        )
    for i, (user_t, user_i) in enumerate(zip(stamps.users, items.users)):
        if user_t != user_i:
            raise ValueError(
                f"{stamps.path}, line {stamps.numbers[i]}, field 1: user {user_t!r}, but line "
                f"{items.numbers[i]} of {items.path} is user {user_i!r} (same users, same order expected)"
            )
    ragged = np.flatnonzero(stamps.lengths != items.lengths)
    if len(ragged):
        i = int(ragged[0])
        raise ValueError(
            f"{stamps.path}, line {stamps.numbers[i]}: {stamps.lengths[i]} timestamps for user "
            f"{stamps.users[i]!r}, but line {items.numbers[i]} of {items.path} has {items.lengths[i]} items "
            "(ragged line)"
        )
    try:
        values = np.array(stamps.values, dtype=np.int64)
    except (ValueError, OverflowError):
        values = None
    if values is None or not all(_INT.fullmatch(v) for v in stamps.values):
        row = next(r for r, v in enumerate(stamps.values) if not _fits_int64(v))
        line, field = stamps.locate(row)
        raise ValueError(
            f"{stamps.path}, line {line}, field {field}: timestamp {stamps.values[row]!r} is not an integer "
            "(unix seconds)"
        )
    owner = np.repeat(np.arange(len(stamps.lengths)), stamps.lengths)
    decreasing = (np.diff(values) < 0) & (owner[1:] == owner[:-1])
    if decreasing.any():
        row = int(np.flatnonzero(decreasing)[0]) + 1
        line, field = stamps.locate(row)
        raise ValueError(
            f"{stamps.path}, line {line}, field {field}: timestamp {values[row]} is smaller than the one "
            f"before it ({values[row - 1]}); a user's timestamps must be non-decreasing (time order)"
        )
    return values


def _fits_int64(text: str) -> bool:
    return bool(_INT.fullmatch(text)) and -(2**63) <= int(text) < 2**63


def detect_separator(path: Path, text: str) -> str | None:
    """The first of :data:`CATALOG_SEPARATORS` on a catalogue line, else None (whitespace)."""
    for sep in CATALOG_SEPARATORS:
        if sep in text:
            log.info("%s: detected the field separator %r on its first line", path, sep)
            return sep
    return None


def read_catalog(path: Path, separator: str | None, encoding: str, header: bool = False) -> dict[str, str]:
    """Item catalogue: raw item id (first field) -> the rest of its line, in file order.

    Args:
        path: one item per line.
        separator: field separator; None = :func:`detect_separator` on the first data line.
        encoding: text encoding.
        header: skip the first non-blank line.

    Raises:
        ValueError: an empty id, an item defined twice (both lines named), no items.
    """
    catalog: dict[str, str] = {}
    first_line: dict[str, int] = {}
    detected = False
    for number, text in text_lines(path, encoding):
        if header:
            header = False
            continue
        if separator is None and not detected:
            separator, detected = detect_separator(path, text), True
        fields = text.split(separator, 1) if separator is not None else text.split(None, 1)
        item = fields[0].strip()
        if not item:
            raise ValueError(f"{path}, line {number}, field 1: empty item id")
        if item in first_line:
            raise ValueError(
                f"{path}, line {number}: item {item!r} already defined on line {first_line[item]}"
            )
        first_line[item] = number
        catalog[item] = fields[1] if len(fields) > 1 else ""
    if not catalog:
        raise ValueError(f"{path} holds no items")
    return catalog
