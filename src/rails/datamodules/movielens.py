"""MovieLens-100K / 1M / 20M sources (spec §5.1-5.2): official archives, paper preprocessing, caching.

Preprocessing (identical for the three releases, as in the paper's code):

- no filtering (every release already has >= 20 ratings per user);
- raw user and movie ids are kept (movie id = item id; 0 stays padding because MovieLens ids start at 1);
  a user id < 1 is an error naming the file and line (it would make a phantom user of a real one's
  rating), as is a movie id < 1;
- per-user chronological sequences with the tie order of :mod:`rails.datamodules.preprocess`;
- the candidate corpus is every movie of the movies file, including never-rated ones (ML-1M: 3,883
  candidates for 3,706 rated movies); a rating of a movie absent from the movies file is an error.

Raw files are looked up in ``raw_dir`` (or individual ``ratings_file`` / ``movies_file`` paths), else in
``<data root>/<release folder>`` (``ml-1m/``, ``ml-20m/``, ``ml-100k/``, the folder inside the official
zip), else the official zip is downloaded into ``<data root>/downloads/``, verified and extracted there.
A half-extracted release folder (a file missing, or a strict prefix of the archive's copy: an interrupted
extraction by another tool) is completed from the verified archive; a file that differs otherwise is taken
to be a deliberate copy and used as it is (the statistics check judges it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from rails.datamodules import raw_io
from rails.datamodules.download import (
    ML_1M_ZIP,
    ML_20M_ZIP,
    ML_100K_U_DATA_SHA256,
    ML_100K_ZIP,
    DownloadError,
    RemoteFile,
    fetch,
    file_digests,
    is_truncated_copy,
    safe_extract_zip,
)
from rails.datamodules.preprocess import RawDatasetSource, group_sequences, sequence_statistics
from rails.datamodules.raw_io import Column

log = logging.getLogger(__name__)

RATING_COLUMNS = [
    Column("user_id", "int"),
    Column("item_id", "int"),
    Column("rating", "float"),
    Column("timestamp", "int"),
]
ML_100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


@dataclass
class MovieLensSource(RawDatasetSource):
    """Common MovieLens logic; use :class:`MovieLens1M`, :class:`MovieLens20M` or :class:`MovieLens100K`.

    Args:
        raw_dir: directory holding the extracted release files; None = ``<root>/<release folder>``.
        cache_dir: where the prepared directory goes; None = the data root.
        download: allow downloading the official zip when the files are absent.
        verify_statistics: fail unless the published statistics are reproduced (false for own subsets).
        ratings_file: explicit path of the ratings file (overrides ``raw_dir`` for this file).
        movies_file: explicit path of the movies file (overrides ``raw_dir`` for this file).
        movies_separator: separator of the movies file; None = the official one. Only for copies that
            were re-saved with another separator.
    """

    ratings_file: str | None = None
    movies_file: str | None = None
    movies_separator: str | None = None

    folder: ClassVar[str]
    archive: ClassVar[RemoteFile]
    ratings_name: ClassVar[str]
    movies_name: ClassVar[str]
    ratings_sep: ClassVar[str]
    ratings_header: ClassVar[str | None] = None
    movies_sep: ClassVar[str] = "::"
    movies_header: ClassVar[str | None] = None
    movies_quoted: ClassVar[bool] = False  # CSV quoting (ML-20M titles hold commas)
    encoding: ClassVar[str] = "latin-1"
    pinned_files: ClassVar[dict[str, str]] = {}

    # -- locating raw files -------------------------------------------------------------------------------
    def _paths(self, root: Path) -> tuple[Path, Path]:
        base = Path(self.raw_dir).expanduser() if self.raw_dir else root / self.folder
        ratings = Path(self.ratings_file).expanduser() if self.ratings_file else base / self.ratings_name
        movies = Path(self.movies_file).expanduser() if self.movies_file else base / self.movies_name
        return ratings.absolute(), movies.absolute()

    def raw_settings(self, root: Path) -> dict[str, Any]:
        ratings, movies = self._paths(root)
        return {"ratings_path": str(ratings), "movies_path": str(movies)}

    def locate(self, root: Path) -> tuple[Path, Path]:
        """Paths of the ratings and movies files, extracted from the official zip when absent or cut short."""
        ratings, movies = self._paths(root)
        missing = [p for p in (ratings, movies) if not p.is_file()]
        if self.raw_dir or self.ratings_file or self.movies_file:
            if missing:
                raise FileNotFoundError(
                    f"{self.name}: {', '.join(map(str, missing))} not found. Place the files of the official "
                    f"{self.archive.url} there, or unset raw_dir/ratings_file/movies_file to download them."
                )
            return ratings, movies
        downloaded = root / "downloads" / self.archive.filename
        member = {p: p.relative_to(root).as_posix() for p in (ratings, movies)}
        cut = [
            p for p in (ratings, movies) if p not in missing and is_truncated_copy(downloaded, member[p], p)
        ]
        if not missing and not cut:
            return ratings, movies
        for path in cut:
            log.warning(
                "%s is a truncated copy of %s in %s: extracting it again", path, member[path], downloaded
            )
        try:
            archive = fetch(self.archive, root / "downloads", allow_download=self.download)
        except DownloadError as err:
            raise DownloadError(
                f"{self.name}: {', '.join(map(str, missing + cut))} missing or cut short and the archive is "
                "unavailable. "
                f"Either extract {self.archive.filename} so that {root / self.folder} holds "
                f"{self.ratings_name} and {self.movies_name}, or: {err}"
            ) from err
        placed = safe_extract_zip(archive, root, overwrite=[member[p] for p in cut])
        if placed:
            log.info("%s: extracted %s from %s into %s", self.name, ", ".join(placed), archive, root)
        still = [p for p in (ratings, movies) if not p.is_file()]
        if still:
            raise FileNotFoundError(f"{self.name}: {archive} did not contain {', '.join(map(str, still))}")
        return ratings, movies

    # -- parsing --------------------------------------------------------------------------------------------
    def read_ratings(self, path: Path) -> dict[str, np.ndarray]:
        """(R,) arrays user_id, item_id, rating, timestamp in raw-file order."""
        expected = self.pinned_files.get(path.name)
        if expected is not None and self.verify_statistics:
            digest = file_digests(path)[0]
            if digest != expected:
                raise ValueError(
                    f"checksum mismatch for {path}: sha256 {digest}, expected {expected} (official "
                    f"{self.name} release). Set verify_statistics=false for a modified copy."
                )
        columns = raw_io.read_table(
            path, RATING_COLUMNS, self.ratings_sep, encoding=self.encoding, header=self.ratings_header
        )
        return {k: np.asarray(v) for k, v in columns.items()}

    def read_movies(self, path: Path) -> pd.DataFrame:
        """Movies frame: item_id (int64, unique, >= 1), title, genres (``id, title, genres`` lines)."""
        columns = [Column("item_id", "int"), Column("title", "str"), Column("genres", "any")]
        rows = raw_io.read_lines(
            path,
            columns,
            self.movies_separator or self.movies_sep,
            self.encoding,
            header=self.movies_header,
            quoted=self.movies_quoted,
        )
        return self._movies_frame(path, rows, [f[2] for _, f in rows])

    def _movies_frame(self, path: Path, rows: list[tuple[int, list[str]]], genres: list[str]) -> pd.DataFrame:
        ids = np.array([int(fields[0]) for _, fields in rows], dtype=np.int64)
        seen: dict[int, int] = {}
        for (number, _), movie in zip(rows, ids.tolist()):
            if movie < 1:
                raise ValueError(f"{path}, line {number}: movie id {movie} < 1 (0 is reserved for padding)")
            if movie in seen:
                raise ValueError(
                    f"{path}, line {number}: movie id {movie} already defined on line {seen[movie]}"
                )
            seen[movie] = number
        return pd.DataFrame({"item_id": ids, "title": [f[1] for _, f in rows], "genres": genres})

    def build(self, root: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
        ratings_path, movies_path = self.locate(root)
        movies = self.read_movies(movies_path)
        raw = self.read_ratings(ratings_path)
        known = np.zeros(int(max(movies["item_id"].max(), raw["item_id"].max(initial=0))) + 1, dtype=bool)
        known[movies["item_id"].to_numpy()] = True
        items, users = raw["item_id"], raw["user_id"]
        skip = 1 if self.ratings_header else 0
        bad = np.flatnonzero(users < 1)
        if len(bad):
            row = int(bad[0])
            raise ValueError(
                f"{ratings_path}, line {raw_io.line_of_row(ratings_path, row, self.encoding, skip)}: user id "
                f"{int(users[row])} < 1 (MovieLens user ids start at 1; {len(bad)} such rating(s))"
            )
        bad = np.flatnonzero((items < 1) | ~known[np.clip(items, 0, None)])
        if len(bad):
            row = int(bad[0])
            raise ValueError(
                f"{ratings_path}, line {raw_io.line_of_row(ratings_path, row, self.encoding, skip)}: movie id "
                f"{int(items[row])} is not in {movies_path} ({len(bad)} such rating(s))"
            )
        sequences = group_sequences(users, items, raw["timestamp"], raw["rating"])
        return sequences, movies, sequence_statistics(sequences, len(movies))


@dataclass
class MovieLens1M(MovieLensSource):
    """MovieLens-1M: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``), ``movies.dat``, ISO-8859-1."""

    name: ClassVar[str] = "ml-1m"
    folder: ClassVar[str] = "ml-1m"
    archive: ClassVar[RemoteFile] = ML_1M_ZIP
    ratings_name: ClassVar[str] = "ratings.dat"
    movies_name: ClassVar[str] = "movies.dat"
    ratings_sep: ClassVar[str] = "::"
    expected_statistics: ClassVar[dict[str, int]] = {
        "num_users": 6040,
        "num_interactions": 1000209,
        "num_rated_items": 3706,
        "num_items": 3883,
    }


@dataclass
class MovieLens20M(MovieLensSource):
    """MovieLens-20M: ``ratings.csv`` (header ``userId,movieId,rating,timestamp``), ``movies.csv``, UTF-8."""

    name: ClassVar[str] = "ml-20m"
    folder: ClassVar[str] = "ml-20m"
    archive: ClassVar[RemoteFile] = ML_20M_ZIP
    ratings_name: ClassVar[str] = "ratings.csv"
    movies_name: ClassVar[str] = "movies.csv"
    ratings_sep: ClassVar[str] = ","
    ratings_header: ClassVar[str | None] = "userId,movieId,rating,timestamp"
    movies_sep: ClassVar[str] = ","
    movies_header: ClassVar[str | None] = "movieId,title,genres"
    movies_quoted: ClassVar[bool] = True
    encoding: ClassVar[str] = "utf-8"
    expected_statistics: ClassVar[dict[str, int]] = {
        "num_users": 138493,
        "num_interactions": 20000263,
        "num_rated_items": 26744,
        "num_items": 27278,
    }


@dataclass
class MovieLens100K(MovieLensSource):
    """MovieLens-100K: ``u.data`` (tab: user item rating timestamp), ``u.item`` (``|``, ISO-8859-1)."""

    name: ClassVar[str] = "ml-100k"
    folder: ClassVar[str] = "ml-100k"
    archive: ClassVar[RemoteFile] = ML_100K_ZIP
    ratings_name: ClassVar[str] = "u.data"
    movies_name: ClassVar[str] = "u.item"
    ratings_sep: ClassVar[str] = "\t"
    pinned_files: ClassVar[dict[str, str]] = {"u.data": ML_100K_U_DATA_SHA256}
    expected_statistics: ClassVar[dict[str, int]] = {
        "num_users": 943,
        "num_interactions": 100000,
        "num_rated_items": 1682,
        "num_items": 1682,
    }

    def read_movies(self, path: Path) -> pd.DataFrame:
        columns = [
            Column("item_id", "int"),
            Column("title", "any"),
            Column("release_date", "any"),
            Column("video_release_date", "any"),
            Column("imdb_url", "any"),
            *(Column(f"genre_{g}", "int") for g in ML_100K_GENRES),
        ]
        rows = raw_io.read_lines(path, columns, self.movies_separator or "|", self.encoding)
        genres = ["|".join(g for g, flag in zip(ML_100K_GENRES, f[5:]) if flag == "1") for _, f in rows]
        return self._movies_frame(path, rows, genres)
