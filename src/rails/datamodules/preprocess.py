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
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from rails.datamodules.canonical import is_canonical, settings_key, write_canonical

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
        return {
            "name": self.name,
            "preprocess_version": PREPROCESS_VERSION,
            "tie_order": TIE_ORDER,
            **options,
            **self.raw_settings(root),
        }

    def prepared_dir(self, root: str | os.PathLike[str]) -> Path:
        """The canonical directory these settings map to (it may not exist yet)."""
        root = Path(root).expanduser().absolute()
        return cache_base(root, self.cache_dir) / f"{self.name}-{settings_key(self.settings(root))}"

    def prepare(self, root: str | os.PathLike[str]) -> Path:
        """Reuse the cached canonical directory, or preprocess the raw files into it atomically."""
        root = Path(root).expanduser().absolute()
        directory = self.prepared_dir(root)
        if is_canonical(directory):
            log.info("%s: reusing prepared data in %s", self.name, directory)
            return directory
        sequences, items, stats = self.build(root)
        log.info(format_statistics(self.name, stats))
        if self.verify_statistics:
            check_statistics(self.name, stats, self.expected_statistics)
        write_canonical(directory, sequences, items, name=self.name, settings=self.settings(root))
        log.info("%s: prepared data written to %s", self.name, directory)
        return directory
