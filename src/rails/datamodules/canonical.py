"""The canonical on-disk format of sequential interaction data, shared by every dataset.

A prepared dataset is a directory holding:

- ``sequences.parquet``: one row per user, columns ``user_id`` (int64), ``item_ids`` (list<int64>,
  chronological), ``timestamps`` (list<int64>, unix seconds, non-decreasing), ``ratings`` (list<float32>).
  Item id 0 is reserved for padding and never appears.
- ``items.parquet``: the candidate corpus, column ``item_id`` (int64, sorted, unique, >= 1); extra
  columns (title, genres, ...) are allowed and ignored by the models.
- ``meta.json``: ``name``, ``format_version``, ``num_users``, ``num_items`` (corpus size), ``max_item_id``,
  ``num_interactions`` and the ``settings`` that produced the files.

Writers go through :func:`write_canonical`, which writes into a temporary sibling directory and renames
it into place (:func:`rails.io.atomic_directory`), so a reader never sees a half-written dataset. A temporary directory left behind by a
killed writer is removed by a later write in the same parent (:func:`remove_stale_temporaries`), and a
prepared directory whose parquet files do not match its ``meta.json`` (e.g. a truncated copy) does not
count as canonical, so it is rebuilt rather than read.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rails.io import TMP_MARKER, atomic_directory

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SEQUENCES_FILE = "sequences.parquet"
ITEMS_FILE = "items.parquet"
META_FILE = "meta.json"
OWNER_FILE = ".owner.json"
STALE_AFTER_S = 3600.0


class DatasetSource(Protocol):
    """Anything that can produce a canonical dataset directory under a root directory."""

    def prepare(self, root: str | os.PathLike[str]) -> Path:
        """Create (or reuse from cache) the canonical files and return their directory."""
        ...


@dataclass
class CanonicalData:
    """Sequences in CSR layout plus the candidate corpus.

    Attributes:
        user_ids: (U,) int64.
        offsets: (U + 1,) int64; user u's interactions are ``[offsets[u], offsets[u + 1])``.
        item_ids: (I,) int64 chronological per user.
        timestamps: (I,) int64.
        ratings: (I,) float32.
        corpus_item_ids: (X,) int64 sorted candidate item ids.
        meta: contents of ``meta.json``.
    """

    user_ids: np.ndarray
    offsets: np.ndarray
    item_ids: np.ndarray
    timestamps: np.ndarray
    ratings: np.ndarray
    corpus_item_ids: np.ndarray
    meta: dict[str, Any]

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def max_item_id(self) -> int:
        return int(max(self.corpus_item_ids.max(initial=0), self.item_ids.max(initial=0)))

    def lengths(self) -> np.ndarray:
        """(U,) number of interactions of each user."""
        return np.diff(self.offsets)


def validate_sequences(frame: pd.DataFrame, source: str) -> None:
    """Raise ValueError naming ``source``, the user and the field when a sequences frame breaks the format."""
    required = ["user_id", "item_ids", "timestamps", "ratings"]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; expected {required}")
    if frame["user_id"].duplicated().any():
        dup = frame.loc[frame["user_id"].duplicated(), "user_id"].iloc[0]
        raise ValueError(f"{source}: user_id {dup} appears in more than one row")
    for row in frame.itertuples(index=False):
        n = len(row.item_ids)
        if n == 0:
            raise ValueError(f"{source}: user_id {row.user_id} has an empty item_ids list")
        if len(row.timestamps) != n or len(row.ratings) != n:
            raise ValueError(
                f"{source}: user_id {row.user_id}: item_ids, timestamps and ratings have lengths "
                f"{n}, {len(row.timestamps)}, {len(row.ratings)}"
            )
        items = np.asarray(row.item_ids)
        if (items <= 0).any():
            raise ValueError(
                f"{source}: user_id {row.user_id}: item id {items[items <= 0][0]} <= 0 (0 is padding)"
            )
        ts = np.asarray(row.timestamps)
        if n > 1 and (np.diff(ts) < 0).any():
            raise ValueError(f"{source}: user_id {row.user_id}: timestamps are not chronological")


def write_canonical(
    directory: str | os.PathLike[str],
    sequences: pd.DataFrame,
    items: pd.DataFrame,
    name: str,
    settings: dict[str, Any],
) -> Path:
    """Validate and atomically write a canonical dataset to ``directory`` (replacing nothing half-done).

    Args:
        directory: final directory; its parent is created if needed.
        sequences: one row per user (see module docstring).
        items: the candidate corpus, column ``item_id``.
        name: dataset name stored in meta.json.
        settings: preprocessing settings stored in meta.json (used as the cache key by callers).

    Returns:
        The final directory.
    """
    directory = Path(directory)
    validate_sequences(sequences, f"{name} sequences")
    if "item_id" not in items.columns:
        raise ValueError(f"{name} items: missing column 'item_id'")
    items = items.sort_values("item_id").reset_index(drop=True)
    if items["item_id"].duplicated().any() or (items["item_id"] <= 0).any():
        raise ValueError(f"{name} items: item_id must be unique and >= 1")
    sequences = sequences.reset_index(drop=True)
    sequences = sequences.assign(
        user_id=sequences["user_id"].astype("int64"),
        item_ids=[np.asarray(x, dtype=np.int64) for x in sequences["item_ids"]],
        timestamps=[np.asarray(x, dtype=np.int64) for x in sequences["timestamps"]],
        ratings=[np.asarray(x, dtype=np.float32) for x in sequences["ratings"]],
    )
    all_items = np.concatenate(sequences["item_ids"].to_numpy()) if len(sequences) else np.zeros(0, np.int64)
    meta = {
        "name": name,
        "format_version": FORMAT_VERSION,
        "num_users": len(sequences),
        "num_items": len(items),
        "num_rated_items": int(len(np.unique(all_items))),
        "max_item_id": int(max(items["item_id"].max() if len(items) else 0, all_items.max(initial=0))),
        "num_interactions": int(len(all_items)),
        "settings": settings,
    }
    directory.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(directory.parent)
    # another process that finished the same preparation first wins: its directory is kept
    with atomic_directory(directory, keep_existing=is_canonical) as tmp:
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "created": time.time()}
        (tmp / OWNER_FILE).write_text(json.dumps(owner))
        sequences[["user_id", "item_ids", "timestamps", "ratings"]].to_parquet(
            tmp / SEQUENCES_FILE, index=False
        )
        items.to_parquet(tmp / ITEMS_FILE, index=False)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        (tmp / OWNER_FILE).unlink()
    return directory


def _process_gone(owner: dict[str, Any]) -> bool:
    """Whether the writer recorded in ``owner`` ran on this host and no longer exists."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists but belongs to someone else
        return False
    return False


def remove_stale_temporaries(parent: str | os.PathLike[str], max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the temporary directories of :func:`write_canonical` that a killed writer left in ``parent``.

    A temporary directory is stale when its writer (pid recorded on this host) is gone, or when it has
    not been modified for ``max_age_s`` seconds (a writer on another host, or one killed before recording
    itself). A live writer's directory on this host is kept however old (writing takes seconds).

    Returns:
        The directories removed.
    """
    parent = Path(parent)
    removed = []
    for candidate in parent.glob(f".*{TMP_MARKER}*"):
        if not candidate.is_dir():
            continue
        try:
            owner = json.loads((candidate / OWNER_FILE).read_text())
        except (OSError, ValueError):
            owner = {}
        try:
            age = time.time() - candidate.stat().st_mtime
        except FileNotFoundError:
            continue
        alive_here = owner.get("host") == socket.gethostname() and not _process_gone(owner)
        if _process_gone(owner) or (age > max_age_s and not alive_here):
            shutil.rmtree(candidate, ignore_errors=True)
            log.info("removed %s, left by an interrupted preparation", candidate)
            removed.append(candidate)
    return removed


def damage(directory: str | os.PathLike[str]) -> str | None:
    """Why a directory holding the canonical files cannot be read (None when the files are intact).

    Reads ``meta.json`` and the parquet footers only: a truncated or corrupt parquet file, unreadable
    metadata, or row counts that disagree with ``meta.json`` are reported.
    """
    directory = Path(directory)
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except (OSError, ValueError) as err:
        return f"{directory / META_FILE} is unreadable ({err})"
    if not isinstance(meta, dict):
        return f"{directory / META_FILE} is not a JSON object"
    for filename, key in ((SEQUENCES_FILE, "num_users"), (ITEMS_FILE, "num_items")):
        try:
            rows = pq.read_metadata(directory / filename).num_rows
        except (OSError, pa.ArrowException) as err:
            return f"{directory / filename} is unreadable ({err})"
        if rows != meta.get(key):
            return f"{directory / filename} has {rows} rows but {META_FILE} says {key}={meta.get(key)}"
    return None


def is_canonical(directory: str | os.PathLike[str]) -> bool:
    """True when ``directory`` holds a complete, intact canonical dataset of the current format version."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not (
        meta_path.is_file() and (directory / SEQUENCES_FILE).is_file() and (directory / ITEMS_FILE).is_file()
    ):
        return False
    try:
        if json.loads(meta_path.read_text()).get("format_version") != FORMAT_VERSION:
            return False
    except (json.JSONDecodeError, AttributeError):
        return False
    return damage(directory) is None


def read_canonical(directory: str | os.PathLike[str]) -> CanonicalData:
    """Load a canonical dataset directory into CSR arrays."""
    directory = Path(directory)
    if not is_canonical(directory):
        problem = damage(directory) if (directory / META_FILE).is_file() else None
        raise FileNotFoundError(
            f"{directory} is not a prepared rails dataset (expected {SEQUENCES_FILE}, {ITEMS_FILE}, {META_FILE} "
            f"with format_version {FORMAT_VERSION})"
            + (f": {problem}; delete the directory to prepare it again" if problem else "")
        )
    meta = json.loads((directory / META_FILE).read_text())
    try:
        frame = pd.read_parquet(directory / SEQUENCES_FILE)
        items = pd.read_parquet(directory / ITEMS_FILE, columns=["item_id"])
    except (OSError, pa.ArrowException) as err:
        raise ValueError(
            f"{directory}: prepared files are unreadable ({err}); delete the directory to prepare it again"
        ) from err
    lengths = frame["item_ids"].map(len).to_numpy(dtype=np.int64)
    offsets = np.zeros(len(frame) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])

    def flat(column: str, dtype: type) -> np.ndarray:
        values = frame[column].to_numpy()
        return np.concatenate(values).astype(dtype) if len(values) else np.zeros(0, dtype)

    return CanonicalData(
        user_ids=frame["user_id"].to_numpy(dtype=np.int64),
        offsets=offsets,
        item_ids=flat("item_ids", np.int64),
        timestamps=flat("timestamps", np.int64),
        ratings=flat("ratings", np.float32),
        corpus_item_ids=items["item_id"].to_numpy(dtype=np.int64),
        meta=meta,
    )


def settings_key(settings: dict[str, Any]) -> str:
    """Short stable hash of preprocessing settings, used to key the cache directory."""
    import hashlib

    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
