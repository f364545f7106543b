"""Shared preprocessing for raw rating logs: chronological grouping, statistics checks, cache placement.

Tie order (documented, deterministic): interactions are ordered per user by a *stable* sort on
``(user, timestamp)``, so rows with equal timestamps, including duplicate ``(user, item, timestamp)``
rows, keep the order in which they appear in the raw file. Duplicates are kept, as in the original
preprocessing. The original code sorts with pandas' default (unstable) quicksort and then shuffles the
output rows without a seed, so its tie order is arbitrary and cannot be reproduced; raw-file order is the
only order that is both deterministic and recoverable from the official files.
"""

from __future__ import annotations

import logging
import os
import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from rails.datamodules.canonical import damage, is_canonical, settings_key, write_canonical

log = logging.getLogger(__name__)

PREPROCESS_VERSION = 1
TIE_ORDER = "stable sort by (user, timestamp); ties keep raw-file row order"


def chronological_order(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """(R,) permutation sorting rows by user, then timestamp, ties by row position (np.lexsort is stable)."""
    return np.lexsort((timestamps, users))


def group_sequences(
    users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, ratings: np.ndarray
) -> pd.DataFrame:
    """Group (R,) interaction arrays into one chronological row per user (canonical ``sequences`` layout).

    Args:
        users: (R,) int64 user ids.
        items: (R,) int64 item ids.
        timestamps: (R,) int64 unix seconds.
        ratings: (R,) float ratings.

    Returns:
        Frame sorted by user id with ``user_id`` and list columns ``item_ids``, ``timestamps``, ``ratings``
        (numpy views into one sorted copy of each array, so memory stays O(R)).
    """
    order = chronological_order(users, timestamps)
    users = users[order]
    boundaries = np.flatnonzero(users[1:] != users[:-1]) + 1
    starts = np.concatenate([[0], boundaries]).astype(np.int64)
    return pd.DataFrame(
        {
            "user_id": users[starts].astype(np.int64),
            "item_ids": np.split(items[order].astype(np.int64, copy=False), boundaries),
            "timestamps": np.split(timestamps[order].astype(np.int64, copy=False), boundaries),
            "ratings": np.split(ratings[order].astype(np.float32), boundaries),
        }
    )


def sequence_statistics(sequences: pd.DataFrame, corpus_size: int) -> dict[str, int]:
    """Users, interactions, distinct rated items and corpus size of a grouped sequences frame."""
    lengths = sequences["item_ids"].map(len).to_numpy()
    items = np.concatenate(sequences["item_ids"].to_numpy()) if len(sequences) else np.zeros(0, np.int64)
    return {
        "num_users": len(sequences),
        "num_interactions": int(lengths.sum()),
        "num_rated_items": int(len(np.unique(items))),
        "num_items": int(corpus_size),
    }


def check_statistics(name: str, stats: dict[str, int], expected: dict[str, int]) -> None:
    """Raise ValueError listing every statistic of ``name`` that differs from its published value."""
    wrong = [f"{k}={stats.get(k)} (published {v:,})" for k, v in expected.items() if stats.get(k) != v]
    if wrong:
        raise ValueError(
            f"{name}: preprocessed statistics do not match the official release: {', '.join(wrong)}. "
            "The raw files are incomplete, modified or not the official ones. If this is intentional (your "
            "own subset), set verify_statistics=false (data.source.verify_statistics=false)."
        )


def format_statistics(name: str, stats: dict[str, int]) -> str:
    return f"{name}: " + ", ".join(f"{k.removeprefix('num_')} {v:,}" for k, v in stats.items())


def describe_sequences(name: str, sequences: pd.DataFrame, positions: bool = False) -> str:
    """One line with the sequence-length percentiles and the time span of a grouped sequences frame."""
    if not len(sequences):
        return f"{name}: no sequences"
    lengths = sequences["item_ids"].map(len).to_numpy()
    pct = np.percentile(lengths, [50, 90, 99]).round(1)
    text = (
        f"{name}: items per user min {lengths.min():,}, median {pct[0]:g}, p90 {pct[1]:g}, p99 {pct[2]:g}, "
        f"max {lengths.max():,}"
    )
    if positions:
        return text + "; no timestamps (positions 0..n-1)"
    first = min(int(np.min(t)) for t in sequences["timestamps"])
    last = max(int(np.max(t)) for t in sequences["timestamps"])
    span = (last - first) / 86400
    start, end = pd.Timestamp(first, unit="s"), pd.Timestamp(last, unit="s")
    return text + f"; time {start:%Y-%m-%d} .. {end:%Y-%m-%d} ({span:,.0f} days)"


def raw_fingerprints(raw_settings: dict[str, Any]) -> dict[str, str]:
    """``size:mtime_ns`` (or ``absent``) of every raw file named by a ``*_path`` key of ``raw_settings``.

    Part of the cache key, so an edited or replaced raw file (new size or modification time) prepares a
    new directory instead of reusing data prepared from the old file.
    """
    prints = {}
    for key, value in sorted(raw_settings.items()):
        if key.endswith("_path") and value:
            try:
                info = os.stat(value)
                prints[key] = f"{info.st_size}:{info.st_mtime_ns}"
            except OSError:
                prints[key] = "absent"
    return prints


def _writable(path: Path) -> bool:
    """Whether ``path`` (or its nearest existing ancestor) can be written to.

    Write permission bits are checked as well as ``os.access``, so a folder marked read-only counts as
    read-only even for root (which ``os.access`` would let through).
    """
    for candidate in (path, *path.parents):
        if candidate.exists():
            return os.access(candidate, os.W_OK) and bool(candidate.stat().st_mode & 0o222)
    return False


def cache_base(root: Path, cache_dir: str | None) -> Path:
    """Directory under which prepared datasets are written: ``cache_dir`` when set, else ``root``.

    A read-only ``root`` (e.g. a shared folder of raw files) falls back to ``$RAILS_CACHE_DIR`` or
    ``~/.cache/rails``, with a log line saying so.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if _writable(root):
        return root
    fallback = Path(os.environ.get("RAILS_CACHE_DIR", "~/.cache/rails")).expanduser()
    log.warning("data root %s is not writable: prepared files go to %s", root, fallback)
    return fallback


@dataclass
class RawDatasetSource(ABC):
    """Base of sources built from raw files: cache lookup, preprocessing, statistics check, atomic write.

    Subclasses define ``name``, :meth:`raw_settings` (what identifies the raw input) and :meth:`build`.
    Every ``*_path`` entry of :meth:`raw_settings` names a raw file whose size and modification time are
    part of the cache key (:func:`raw_fingerprints`).

    Args:
        raw_dir: directory holding the already-downloaded raw files; None = the official location under
            the data root (downloaded there when absent).
        cache_dir: where the prepared canonical directory goes; None = the data root.
        download: allow downloading the official files when they are absent.
        verify_statistics: compare the statistics against the official release and fail on mismatch;
            set false for your own subsets.
    """

    raw_dir: str | None = None
    cache_dir: str | None = None
    download: bool = True
    verify_statistics: bool = True

    name: ClassVar[str]
    expected_statistics: ClassVar[dict[str, int]]

    @abstractmethod
    def raw_settings(self, root: Path) -> dict[str, Any]:
        """Settings that identify the raw input (resolved paths), part of the cache key."""

    @abstractmethod
    def build(self, root: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
        """Locate (download if allowed) and preprocess the raw files: (sequences, items, statistics)."""

    def settings(self, root: Path) -> dict[str, Any]:
        """Everything that determines the prepared files; hashed into the cache directory name."""
        options = {k: v for k, v in asdict(self).items() if k not in ("cache_dir", "download")}
        raw = self.raw_settings(root)
        return {
            "name": self.name,
            "preprocess_version": PREPROCESS_VERSION,
            "tie_order": TIE_ORDER,
            **options,
            **raw,
            "raw_files": raw_fingerprints(raw),
        }

    def _directory(self, root: Path, settings: dict[str, Any]) -> Path:
        return cache_base(root, self.cache_dir) / f"{self.name}-{settings_key(settings)}"

    def prepared_dir(self, root: str | os.PathLike[str]) -> Path:
        """The canonical directory these settings and raw files map to (it may not exist yet)."""
        root = Path(root).expanduser().absolute()
        return self._directory(root, self.settings(root))

    def prepare(self, root: str | os.PathLike[str]) -> Path:
        """Reuse the cached canonical directory, or preprocess the raw files into it atomically.

        A cached directory whose files are damaged (truncated parquet, counts that disagree with
        ``meta.json``) is prepared again. The directory is keyed by the settings *after* :meth:`build`,
        so raw files downloaded by the build are fingerprinted as they are on disk.
        """
        root = Path(root).expanduser().absolute()
        directory = self.prepared_dir(root)
        if is_canonical(directory):
            log.info("%s: reusing prepared data in %s", self.name, directory)
            return directory
        if directory.exists():
            log.warning(
                "%s: prepared data in %s is damaged (%s): preparing it again",
                self.name,
                directory,
                damage(directory),
            )
        sequences, items, stats = self.build(root)
        settings = self.settings(root)
        log.info(format_statistics(self.name, stats))
        log.info(
            describe_sequences(self.name, sequences, positions=settings.get("timestamps") == "positions")
        )
        if self.verify_statistics:
            check_statistics(self.name, stats, self.expected_statistics)
        directory = self._directory(root, settings)
        write_canonical(directory, sequences, items, name=self.name, settings=settings)
        log.info("%s: prepared data written to %s", self.name, directory)
        return directory


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class OwnDataSource(RawDatasetSource):
    """Base of the sources of your own files (sequence files, interaction tables): the dataset name and the
    statistics to verify are settings (``dataset: str``, ``expected: dict | None`` dataclass fields of the
    subclass) instead of class constants."""

    dataset: str
    expected: dict[str, int] | None

    def check_own_settings(self) -> None:
        """Validate ``dataset`` and ``expected`` (from the subclass's ``__post_init__``).

        Raises:
            ValueError: naming ``data.source.dataset`` or ``data.source.expected``.
        """
        if not _PLAIN_NAME.fullmatch(self.dataset):
            raise ValueError(
                f"data.source.dataset must be a plain name (letters, digits, '.', '_', '-'), got "
                f"{self.dataset!r}"
            )
        self.expected = {str(k): int(v) for k, v in self.expected.items()} if self.expected else None
        if self.verify_statistics and not self.expected:
            raise ValueError(
                "data.source.verify_statistics=true needs data.source.expected (the statistics to check); "
                "set verify_statistics=false for your own data"
            )

    @property  # type: ignore[override]
    def name(self) -> str:
        return self.dataset

    @property  # type: ignore[override]
    def expected_statistics(self) -> dict[str, int]:
        return dict(self.expected or {})
