"""Amazon Books source (spec §5.1-5.2): SNAP ``ratings_Books.csv`` with the paper's single-pass filter.

Raw file: headerless ``user,item,rating,timestamp`` (string user and item ids, numeric rating, unix
seconds). Preprocessing, as in the paper's code:

1. count each user's and each item's rows on the raw file (duplicates included);
2. keep the rows whose item has >= ``min_item_count`` rows AND whose user has >= ``min_user_count``
   rows: one pass, not an iterative k-core;
3. remap item ids to 1..K in sorted order of the raw id strings (the original's 0-based pandas
   categorical codes shifted by +1, so 0 stays padding); users likewise to 1..U. Raw ids are opaque
   strings, so a user or item named ``0`` or ``-1`` is an id like any other (it gets its own code >= 1;
   nothing is merged into padding), unlike MovieLens, whose numeric ids are kept and must be >= 1;
4. group per user chronologically (tie order of :mod:`rails.datamodules.preprocess`) and drop users
   left with fewer than ``min_sequence_length`` interactions.

The corpus is every remapped item 1..K (K = 695,762 on the official file). No checksum of
``ratings_Books.csv`` is published, so the official file is verified by its statistics instead: 22,507,155
raw ratings and 695,762 items after filtering.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rails.datamodules import raw_io
from rails.datamodules.download import AMAZON_BOOKS_CSV, DownloadError, fetch
from rails.datamodules.preprocess import RawDatasetSource, group_sequences, sequence_statistics
from rails.datamodules.raw_io import Column

RAW_COLUMNS = [
    Column("user", "str"),
    Column("item", "str"),
    Column("rating", "float"),
    Column("timestamp", "int"),
]


def encode(values: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Dictionary-encode (R,) string ids: (R,) int64 dictionary positions and the (V,) distinct ids."""
    encoded = pc.dictionary_encode(values.combine_chunks())
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def sorted_codes(index: np.ndarray, dictionary: pa.Array, keep: np.ndarray) -> tuple[np.ndarray, pa.Array]:
    """1-based codes in sorted order of the raw ids, dense over the ids that occur in kept rows.

    Args:
        index: (R,) dictionary position of each row's id.
        dictionary: (V,) distinct raw ids.
        keep: (R,) bool rows that survive the filter.

    Returns:
        codes: (R,) int64 code of each kept row's id (0 for dropped rows).
        names: (C,) the raw id of code c + 1.
    """
    present = np.bincount(index[keep], minlength=len(dictionary)) > 0
    order = pc.sort_indices(dictionary).to_numpy()
    order = order[present[order]]
    code_of = np.zeros(len(dictionary), dtype=np.int64)
    code_of[order] = np.arange(1, len(order) + 1)
    return np.where(keep, code_of[index], 0), dictionary.take(pa.array(order))


@dataclass
class AmazonBooks(RawDatasetSource):
    """Amazon Books ratings (McAuley et al. 2015, SNAP), preprocessed as in the paper.

    Args:
        raw_dir: directory holding ``ratings_Books.csv``; None = ``<root>/amzn-books`` (downloaded there).
        cache_dir: where the prepared directory goes; None = the data root.
        download: allow downloading the official file when absent.
        verify_statistics: fail unless the published statistics are reproduced (false for own subsets).
        raw_file: explicit path of the ratings csv (overrides ``raw_dir``).
        min_user_count: keep rows of users with at least this many raw rows.
        min_item_count: keep rows of items with at least this many raw rows.
        min_sequence_length: drop users with fewer interactions after the row filter.
    """

    raw_file: str | None = None
    min_user_count: int = 5
    min_item_count: int = 5
    min_sequence_length: int = 5

    name: ClassVar[str] = "amzn-books"
    folder: ClassVar[str] = "amzn-books"
    expected_statistics: ClassVar[dict[str, int]] = {"num_raw_ratings": 22507155, "num_items": 695762}

    def __post_init__(self) -> None:
        for key in ("min_user_count", "min_item_count", "min_sequence_length"):
            if getattr(self, key) < 1:
                raise ValueError(f"data.source.{key} must be >= 1, got {getattr(self, key)}")
        paper = (self.min_user_count, self.min_item_count, self.min_sequence_length) == (5, 5, 5)
        if self.verify_statistics and not paper:
            raise ValueError(
                "data.source.verify_statistics=true checks the paper's statistics, which only hold for "
                "min_user_count = min_item_count = min_sequence_length = 5; set verify_statistics=false"
            )

    def _path(self, root: Path) -> Path:
        if self.raw_file:
            return Path(self.raw_file).expanduser().absolute()
        base = Path(self.raw_dir).expanduser() if self.raw_dir else root / self.folder
        return (base / AMAZON_BOOKS_CSV.filename).absolute()

    def raw_settings(self, root: Path) -> dict[str, Any]:
        return {"ratings_path": str(self._path(root))}

    def locate(self, root: Path) -> Path:
        """Path of the ratings csv, downloading it to ``<root>/amzn-books/`` when absent and allowed."""
        path = self._path(root)
        if path.is_file():
            return path
        if self.raw_file or self.raw_dir:
            raise FileNotFoundError(
                f"{self.name}: {path} not found. Place the official {AMAZON_BOOKS_CSV.url} there, or unset "
                "raw_dir/raw_file to download it."
            )
        try:
            return fetch(AMAZON_BOOKS_CSV, path.parent, allow_download=self.download)
        except DownloadError as err:
            raise DownloadError(f"{self.name}: {err}") from err

    def build(self, root: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
        path = self.locate(root)
        raw = raw_io.read_table(path, RAW_COLUMNS, ",", encoding="utf-8", require_trailing_newline=False)
        user_index, user_names = encode(raw.pop("user"))
        item_index, item_names = encode(raw.pop("item"))
        user_counts, item_counts = np.bincount(user_index), np.bincount(item_index)
        keep = (user_counts[user_index] >= self.min_user_count) & (
            item_counts[item_index] >= self.min_item_count
        )
        item_codes, item_names = sorted_codes(item_index, item_names, keep)
        user_codes, _ = sorted_codes(user_index, user_names, keep)
        del user_index, item_index
        rows = np.flatnonzero(keep)
        sequences = group_sequences(
            user_codes[rows], item_codes[rows], raw["timestamp"][rows], raw["rating"][rows]
        )
        sequences = sequences[sequences["item_ids"].map(len) >= self.min_sequence_length].reset_index(
            drop=True
        )
        items = pd.DataFrame({"item_id": np.arange(1, len(item_names) + 1), "asin": item_names.to_pylist()})
        stats = {"num_raw_ratings": len(keep), **sequence_statistics(sequences, len(items))}
        return sequences, items, stats
