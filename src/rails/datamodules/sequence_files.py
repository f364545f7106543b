"""Per-user sequence text files (the SASRec / S3-Rec layout) as a canonical dataset: ``data=sequences``.

Files (whitespace-separated, one line per user, blank lines ignored):

- ``items_file``: ``user item_1 item_2 ... item_n``, each user's items in time order;
- ``timestamps_file`` (optional): ``user t_1 ... t_n``, the same users in the same order with exactly as
  many values, integer unix seconds, non-decreasing. Without it a user's timestamps are the positions
  ``0 .. n-1`` and the prepared settings say ``timestamps: positions`` (an HSTU time bias then sees
  positions, not time gaps);
- ``catalog_file`` (optional): the item catalogue, one item per line, the item id in the first field
  (e.g. MovieLens ``movies.dat``); the corpus then includes catalogue items nobody interacted with, and an
  item of ``items_file`` missing from the catalogue is an error.

User and item ids follow :mod:`rails.datamodules.ids` (integers >= 1 kept, other ids remapped stably);
``items.parquet`` keeps each item's raw id (``raw_id``) and the rest of its catalogue line (``info``).
There are no ratings in these files: every interaction gets rating 1.0 (implicit feedback).

Relative file paths are resolved against ``raw_dir`` when it is set, else against the data root.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rails.datamodules.download import DownloadError, RemoteFile, fetch, verify_file
from rails.datamodules.ids import assign_ids, warn_if_sparse
from rails.datamodules.preprocess import OwnDataSource, group_sequences, sequence_statistics
from rails.datamodules.sequence_text import SequenceLines, parse_timestamps, read_catalog, read_sequence_file

log = logging.getLogger(__name__)


@dataclass
class SequenceFiles(OwnDataSource):
    """Per-user sequence text files, optional parallel timestamps, optional item catalogue.

    Args:
        raw_dir: folder that relative file paths are resolved against; None = the data root.
        cache_dir: where the prepared directory goes; None = the data root.
        download: allow downloading ``url`` when ``items_file`` is absent.
        verify_statistics: compare the statistics with ``expected`` (and a present ``items_file`` with
            ``sha256``) and fail on a mismatch.
        items_file: path of the ``user item item ...`` file (required; checked when preparing).
        timestamps_file: path of the parallel ``user t t ...`` file; None = positions 0..n-1.
        catalog_file: path of the item catalogue (item id in the first field); None = the corpus is the
            items that occur in ``items_file``.
        catalog_separator: field separator of the catalogue; None = detected from its first line
            (``::``, tab, ``;``, ``,``, ``|``, else whitespace).
        catalog_header: the catalogue's first line is a header (skipped).
        encoding: text encoding of the items and timestamps files.
        catalog_encoding: text encoding of the catalogue (MovieLens: ``latin-1``).
        dataset: name of the prepared dataset (cache folder ``<dataset>-<hash>``, ``meta.json`` name).
        expected: statistics to verify (``num_users``, ``num_interactions``, ``num_rated_items``,
            ``num_items``) when ``verify_statistics`` is true.
        url: public URL of ``items_file``, downloaded to the ``items_file`` path when that is absent.
        sha256: pinned SHA-256 of ``items_file`` (checked after a download, and on a local file when
            ``verify_statistics`` is true).
    """

    verify_statistics: bool = False
    items_file: str | None = None
    timestamps_file: str | None = None
    catalog_file: str | None = None
    catalog_separator: str | None = None
    catalog_header: bool = False
    encoding: str = "utf-8"
    catalog_encoding: str = "utf-8"
    dataset: str = "sequences"
    expected: dict[str, int] | None = None
    url: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        self.check_own_settings()
        if self.catalog_separator == "":
            raise ValueError("data.source.catalog_separator must not be empty (null = detect)")

    # -- locating files -------------------------------------------------------------------------------------
    def _resolve(self, root: Path, value: str | None) -> Path | None:
        if not value:
            return None
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = (Path(self.raw_dir).expanduser() if self.raw_dir else root) / path
        return path.absolute()

    def paths(self, root: Path) -> tuple[Path, Path | None, Path | None]:
        """Resolved (items, timestamps or None, catalogue or None) paths."""
        items = self._resolve(root, self.items_file)
        if items is None:
            raise ValueError("data.source.items_file is required (a file of lines 'user item item ...')")
        return items, self._resolve(root, self.timestamps_file), self._resolve(root, self.catalog_file)

    def raw_settings(self, root: Path) -> dict[str, Any]:
        items, timestamps, catalog = self.paths(root)
        return {
            "items_path": str(items),
            "timestamps_path": str(timestamps) if timestamps else None,
            "catalog_path": str(catalog) if catalog else None,
            "timestamps": "file" if timestamps else "positions",
            "ratings": "implicit (1.0)",
        }

    def locate(self, root: Path) -> tuple[Path, Path | None, Path | None]:
        """The resolved paths, checked to exist; ``items_file`` is downloaded from ``url`` when absent."""
        paths = self.paths(root)
        items = paths[0]
        remote = RemoteFile(url=self.url or str(items), filename=items.name, sha256=self.sha256)
        if not items.is_file() and self.url:
            try:
                fetch(remote, items.parent, allow_download=self.download)
            except DownloadError as err:
                raise DownloadError(
                    f"{self.dataset}: data.source.items_file {items} is absent and {err}"
                ) from err
        elif items.is_file() and self.sha256 and self.verify_statistics:
            verify_file(items, remote)
        keys = ("items_file", "timestamps_file", "catalog_file")
        for key, path in zip(keys, paths):
            if path is not None and not path.is_file():
                hint = "" if Path(getattr(self, key)).is_absolute() else f" (resolved against {path.parent})"
                raise FileNotFoundError(f"{self.dataset}: data.source.{key} {path} not found{hint}")
        return paths

    # -- building -------------------------------------------------------------------------------------------
    def build(self, root: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
        items_path, timestamps_path, catalog_path = self.locate(root)
        lines = read_sequence_file(items_path, self.encoding)
        if timestamps_path is not None:
            stamps = parse_timestamps(read_sequence_file(timestamps_path, self.encoding), lines)
        else:
            stamps = positions(lines.lengths)
        raw_items = pd.Series(lines.values, dtype=object)
        codes, distinct = pd.factorize(raw_items)
        info: dict[str, str] = {}
        if catalog_path is not None:
            info = read_catalog(
                catalog_path, self.catalog_separator, self.catalog_encoding, self.catalog_header
            )
            check_in_catalog(lines, codes, distinct, info, items_path, catalog_path)
            vocabulary = list(info)
        else:
            vocabulary = list(distinct)
        ids = assign_ids(np.asarray(vocabulary, dtype=object))
        warn_if_sparse(ids, f"{self.dataset} items")
        id_of = dict(zip(vocabulary, ids.tolist()))
        item_ids = np.fromiter((id_of[v] for v in distinct), dtype=np.int64, count=len(distinct))[codes]
        user_ids = assign_ids(np.asarray(lines.users, dtype=object))
        users = np.repeat(user_ids, lines.lengths)
        sequences = group_sequences(users, item_ids, stamps, np.ones(len(item_ids), dtype=np.float32))
        items = pd.DataFrame({"item_id": ids, "raw_id": [str(v) for v in vocabulary]})
        if info:
            items["info"] = [info[v] for v in vocabulary]
        items = items.sort_values("item_id").reset_index(drop=True)
        return sequences, items, sequence_statistics(sequences, len(items))


def positions(lengths: np.ndarray) -> np.ndarray:
    """(R,) int64 position of every interaction within its user's sequence (0..n-1 per user)."""
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(int(lengths.sum()), dtype=np.int64) - starts


def check_in_catalog(
    lines: SequenceLines,
    codes: np.ndarray,
    distinct: pd.Index,
    catalog: dict[str, str],
    items_path: Path,
    catalog_path: Path,
) -> None:
    """Raise ValueError naming the items file line of the first item that is not in the catalogue."""
    missing = np.array([v not in catalog for v in distinct], dtype=bool)
    bad = np.flatnonzero(missing[codes])
    if len(bad):
        row = int(bad[0])
        line, field = lines.locate(row)
        raise ValueError(
            f"{items_path}, line {line}, field {field}: item {lines.values[row]!r} is not in the catalogue "
            f"{catalog_path} ({int(missing.sum())} such item(s))"
        )
