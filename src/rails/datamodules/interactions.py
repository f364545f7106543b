"""Interaction tables (CSV / TSV / parquet, gzip allowed) as a canonical dataset: ``data=interactions``.

One row per interaction; ``columns`` maps the roles ``user``, ``item`` and optionally ``timestamp`` (integer
unix seconds) and ``rating`` to the file's column names, or to 0-based positions for a headerless file.
Preprocessing, in this order:

1. ``min_rating``: keep rows whose rating is >= it (needs a rating column);
2. ``duplicates`` of a (user, item) pair: ``keep`` all rows, keep the ``first`` or the ``last`` one in time
   order (ties in file order);
3. ``min_user_count`` / ``min_item_count``: ``k_core: iterative`` drops users and items below the counts
   until every remaining user and item meets them (a k-core); ``single_pass`` counts once and keeps the
   rows whose user and item both meet them (the Amazon Books rule of :mod:`rails.datamodules.amazon`);
4. ids by the rule of :mod:`rails.datamodules.ids` (integers >= 1 kept, other ids remapped stably), over
   the users and items that remain; the corpus is every remaining item;
5. per-user chronological sequences with the tie order of :mod:`rails.datamodules.preprocess` (stable
   sort on (user, timestamp): equal timestamps keep file order). Without a timestamp column the file
   order is the time order and the timestamps are the positions 0..n-1 (settings: ``timestamps:
   positions``). Without a rating column every rating is 1.0.

Relative paths are resolved against ``raw_dir`` when it is set, else against the data root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rails.datamodules import table_io
from rails.datamodules.ids import assign_ids, warn_if_sparse
from rails.datamodules.preprocess import (
    OwnDataSource,
    chronological_order,
    group_sequences,
    sequence_statistics,
)

ROLES = ("user", "item", "timestamp", "rating")
KINDS: dict[str, table_io.Kind] = {"user": "id", "item": "id", "timestamp": "int", "rating": "float"}


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"data.source.{key} must be one of {list(allowed)}, got {value!r}")


@dataclass
class InteractionTable(OwnDataSource):
    """An interaction log table, filtered and grouped into per-user sequences.

    Args:
        raw_dir: folder that a relative ``path`` is resolved against; None = the data root.
        cache_dir: where the prepared directory goes; None = the data root.
        download: unused by local files (kept for the common source interface).
        verify_statistics: compare the statistics with ``expected`` and fail on a mismatch.
        path: the table file (``.csv``, ``.tsv``, ``.parquet``, optionally ``.gz``).
        format: ``auto`` (from the file name), ``csv``, ``tsv`` or ``parquet``.
        columns: role (``user``, ``item``, ``timestamp``, ``rating``) -> column name or 0-based position;
            ``timestamp`` and ``rating`` may be absent or null.
        separator: field separator of CSV/TSV; None = ``,`` for csv and tab for tsv.
        header: the first line holds the column names.
        encoding: text encoding of CSV/TSV.
        min_rating: keep rows with rating >= this; None = no rating filter.
        duplicates: ``keep``, ``first`` or ``last`` row of each (user, item) pair.
        min_user_count: minimum interactions per user.
        min_item_count: minimum interactions per item.
        k_core: ``iterative`` (repeat until stable) or ``single_pass`` (count once).
        dataset: name of the prepared dataset (cache folder ``<dataset>-<hash>``, ``meta.json`` name).
        expected: statistics to verify when ``verify_statistics`` is true.
    """

    verify_statistics: bool = False
    path: str | None = None
    format: str = "auto"
    columns: dict[str, Any] | None = None
    separator: str | None = None
    header: bool = True
    encoding: str = "utf-8"
    min_rating: float | None = None
    duplicates: str = "keep"
    min_user_count: int = 1
    min_item_count: int = 1
    k_core: str = "iterative"
    dataset: str = "interactions"
    expected: dict[str, int] | None = None

    def __post_init__(self) -> None:
        _choice("format", self.format, ("auto", "csv", "tsv", "parquet"))
        _choice("duplicates", self.duplicates, ("keep", "first", "last"))
        _choice("k_core", self.k_core, ("iterative", "single_pass"))
        for key in ("min_user_count", "min_item_count"):
            if getattr(self, key) < 1:
                raise ValueError(f"data.source.{key} must be >= 1, got {getattr(self, key)}")
        if self.separator == "":
            raise ValueError("data.source.separator must not be empty (null = from the format)")
        columns = dict(self.columns) if self.columns is not None else {"user": "user", "item": "item"}
        unknown = sorted(set(columns) - set(ROLES))
        if unknown:
            raise ValueError(
                f"data.source.columns: unknown role(s) {unknown}; expected some of {list(ROLES)}"
            )
        for role in ("user", "item"):
            if columns.get(role) is None:
                raise ValueError(
                    f"data.source.columns.{role} is required (a column name or 0-based position)"
                )
        self.columns = {k: v for k, v in columns.items() if v is not None}
        if self.min_rating is not None and "rating" not in self.columns:
            raise ValueError("data.source.min_rating needs data.source.columns.rating")
        self.check_own_settings()

    def table_path(self, root: Path) -> Path:
        if not self.path:
            raise ValueError("data.source.path is required (the interactions table)")
        path = Path(self.path).expanduser()
        if not path.is_absolute():
            path = (Path(self.raw_dir).expanduser() if self.raw_dir else root) / path
        return path.absolute()

    def raw_settings(self, root: Path) -> dict[str, Any]:
        return {
            "table_path": str(self.table_path(root)),
            "timestamps": "column" if "timestamp" in (self.columns or {}) else "positions",
            "ratings": "column" if "rating" in (self.columns or {}) else "implicit (1.0)",
        }

    def read(self, root: Path) -> tuple[Path, dict[str, np.ndarray]]:
        """The table's path and role -> (R,) numpy column, rows in file order."""
        path = self.table_path(root)
        if not path.is_file():
            raise FileNotFoundError(f"{self.dataset}: data.source.path {path} not found")
        if path.stat().st_size == 0:
            raise ValueError(f"{path} is empty (0 bytes)")
        assert self.columns is not None
        kinds = {role: KINDS[role] for role in self.columns}
        fmt = table_io.table_format(path, self.format)
        if fmt == "parquet":
            columns = table_io.read_parquet_columns(path, self.columns, kinds)
        else:
            sep = self.separator or ("," if fmt == "csv" else "\t")
            names = table_io.header_names(path, sep, self.encoding) if self.header else None
            positions = table_io.resolve_columns(path, self.columns, names, "line 1 (header)")
            columns = table_io.read_csv_columns(path, sep, self.encoding, self.header, positions, kinds)
        out = {role: column.to_numpy() for role, column in columns.items()}
        if len(out["user"]) == 0:
            raise ValueError(f"{path} holds no data rows")
        return path, out

    def build(self, root: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
        path, raw = self.read(root)
        num_rows = len(raw["user"])
        user_codes, user_names = pd.factorize(raw["user"])
        item_codes, item_names = pd.factorize(raw["item"])
        row = np.arange(num_rows, dtype=np.int64)
        time = raw["timestamp"].astype(np.int64) if "timestamp" in raw else row
        keep = np.ones(num_rows, dtype=bool)
        if self.min_rating is not None:
            keep &= raw["rating"] >= self.min_rating
        if self.duplicates != "keep":
            keep &= first_or_last(user_codes, item_codes, time, keep, self.duplicates)
        keep = count_filter(
            user_codes, item_codes, keep, self.min_user_count, self.min_item_count, self.k_core
        )
        if not keep.any():
            raise ValueError(
                f"{path}: no interactions left after filtering ({num_rows:,} rows; min_rating={self.min_rating}, "
                f"duplicates={self.duplicates}, min_user_count={self.min_user_count}, "
                f"min_item_count={self.min_item_count}, k_core={self.k_core})"
            )
        rows = np.flatnonzero(keep)
        users, user_ids = _dense_ids(user_codes[rows], user_names)
        items, item_ids = _dense_ids(item_codes[rows], item_names)
        warn_if_sparse(item_ids, f"{self.dataset} items")
        stamps = time[rows] if "timestamp" in raw else positions_in_file_order(users)
        ratings = raw["rating"][rows] if "rating" in raw else np.ones(len(rows))
        sequences = group_sequences(users, items, stamps, ratings)
        catalog = pd.DataFrame(
            {"item_id": item_ids, "raw_id": [str(v) for v in item_names[np.unique(item_codes[rows])]]}
        )
        stats = {"num_raw_rows": num_rows, **sequence_statistics(sequences, len(catalog))}
        return sequences, catalog.sort_values("item_id").reset_index(drop=True), stats


def _dense_ids(codes: np.ndarray, names: pd.Index | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R,) ids of the kept rows and the (V,) ids of the distinct kept raw ids (sorted by code)."""
    present = np.unique(codes)
    ids = assign_ids(np.asarray(names, dtype=object)[present])
    id_of_code = np.zeros(int(codes.max()) + 1, dtype=np.int64)
    id_of_code[present] = ids
    return id_of_code[codes], ids


def positions_in_file_order(users: np.ndarray) -> np.ndarray:
    """(R,) position of each row among its user's rows, in file order (the time order without timestamps)."""
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    lengths = np.diff(np.r_[starts, len(users)])
    positions = np.empty(len(users), dtype=np.int64)
    positions[order] = np.arange(len(users)) - np.repeat(starts, lengths)
    return positions


def first_or_last(
    users: np.ndarray, items: np.ndarray, time: np.ndarray, keep: np.ndarray, which: str
) -> np.ndarray:
    """(R,) bool: the kept row that is the ``first`` / ``last`` of its (user, item) pair in time order."""
    rows = np.flatnonzero(keep)
    order = rows[chronological_order(users[rows], time[rows])]
    if which == "last":
        order = order[::-1]
    pairs = users[order].astype(np.int64) * (int(items.max()) + 1) + items[order]
    _, first = np.unique(pairs, return_index=True)
    chosen = np.zeros(len(keep), dtype=bool)
    chosen[order[first]] = True
    return chosen


def count_filter(
    users: np.ndarray, items: np.ndarray, keep: np.ndarray, min_user: int, min_item: int, k_core: str
) -> np.ndarray:
    """(R,) bool rows kept by the user/item minimum counts (iterative k-core or one pass)."""
    keep = keep.copy()
    if min_user <= 1 and min_item <= 1:
        return keep
    while True:
        user_counts = np.bincount(users[keep], minlength=int(users.max()) + 1)
        item_counts = np.bincount(items[keep], minlength=int(items.max()) + 1)
        new = keep & (user_counts[users] >= min_user) & (item_counts[items] >= min_item)
        if k_core == "single_pass" or (new == keep).all():
            return new
        keep = new
