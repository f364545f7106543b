"""MovieLens sources on small files in the exact raw formats, plus the real shared ML-100K / ML-1M files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rails.datamodules.canonical import is_canonical, read_canonical
from rails.datamodules.movielens import MovieLens1M, MovieLens20M, MovieLens100K
from rails.datamodules.preprocess import TIE_ORDER

# (user, movie, rating, timestamp) in file order. User 1 has a timestamp tie (movies 3 then 1, same ts)
# and a duplicate (user, item, timestamp) row; user 2's rows are out of chronological order in the file.
ROWS = [
    (2, 5, 3, 300),
    (1, 3, 4, 100),
    (1, 1, 5, 100),
    (2, 2, 4, 200),
    (1, 2, 2, 50),
    (1, 3, 4, 100),
    (2, 4, 1, 250),
]
MOVIES = [(1, "Toy Story (1995)", "Animation"), (2, "Amélie (2001)", "Comedy|Romance")]
MOVIES += [(3, "Heat (1995)", "Action"), (4, "Se7en (1995)", "Thriller"), (5, "Fargo (1996)", "Crime")]
MOVIES += [(9, "Never Rated (1999)", "Drama")]


def write_ml1m(directory: Path, rows=ROWS, movies=MOVIES) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ratings.dat").write_bytes(
        "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows).encode("latin-1")
    )
    (directory / "movies.dat").write_bytes(
        "".join(f"{m}::{t}::{g}\n" for m, t, g in movies).encode("latin-1")
    )
    return directory


def ml1m(raw: Path, tmp_path: Path, **kw) -> MovieLens1M:
    return MovieLens1M(raw_dir=str(raw), cache_dir=str(tmp_path / "cache"), verify_statistics=False, **kw)


def test_ml1m_sequences_ties_and_corpus(tmp_path: Path) -> None:
    source = ml1m(write_ml1m(tmp_path / "raw"), tmp_path)
    data = read_canonical(source.prepare(tmp_path / "root"))
    assert data.user_ids.tolist() == [1, 2]
    seqs = [data.item_ids[a:b].tolist() for a, b in zip(data.offsets[:-1], data.offsets[1:])]
    # user 1: ts 50 first; the three ts-100 rows keep raw-file order (3, 1, duplicate 3)
    assert seqs == [[2, 3, 1, 3], [2, 4, 5]]
    assert data.timestamps.tolist() == [50, 100, 100, 100, 200, 250, 300]
    assert data.ratings.tolist() == [2, 4, 5, 4, 4, 1, 3]
    assert data.corpus_item_ids.tolist() == [1, 2, 3, 4, 5, 9]  # never-rated movie 9 is a candidate
    assert data.meta["settings"]["tie_order"] == TIE_ORDER
    titles = pd.read_parquet(source.prepare(tmp_path / "root") / "items.parquet")["title"].tolist()
    assert titles[1] == "Amélie (2001)"  # ISO-8859-1 decoded


def test_cache_reused_and_keyed_by_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = write_ml1m(tmp_path / "raw")
    first = ml1m(raw, tmp_path).prepare(tmp_path / "root")

    def fail(*args, **kwargs):
        raise AssertionError("cache was not reused")

    monkeypatch.setattr(MovieLens1M, "build", fail)
    assert ml1m(raw, tmp_path).prepare(tmp_path / "root") == first
    other = ml1m(raw, tmp_path, movies_separator="::")  # a different setting means a different cache entry
    assert other.prepared_dir(tmp_path / "root") != first
    with pytest.raises(AssertionError, match="not reused"):
        other.prepare(tmp_path / "root")


def test_statistics_mismatch_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    source = MovieLens1M(raw_dir=str(write_ml1m(tmp_path / "raw")), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"num_users=2 \(published 6,040\).*verify_statistics=false"):
        source.prepare(tmp_path / "root")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = ml1m(write_ml1m(tmp_path / "raw"), tmp_path)
    calls = []
    original = pd.DataFrame.to_parquet

    def flaky(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # sequences written, items not yet
            raise OSError("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", flaky)
    with pytest.raises(OSError, match="disk full"):
        source.prepare(tmp_path / "root")
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.setattr(pd.DataFrame, "to_parquet", original)
    assert is_canonical(source.prepare(tmp_path / "root"))


def _error_case(tmp_path: Path, ratings: bytes | None = None, movies: bytes | None = None) -> Path:
    raw = write_ml1m(tmp_path / "raw")
    if ratings is not None:
        (raw / "ratings.dat").write_bytes(ratings)
    if movies is not None:
        (raw / "movies.dat").write_bytes(movies)
    return raw


GOOD = b"1::1::5::100\n1::2::4::200\n"


@pytest.mark.parametrize(
    ("ratings", "movies", "pattern"),
    [
        (
            b"1,1,5,100\n",
            None,
            r"ratings\.dat, line 1: expected 4 fields separated by '::'.*found 1 \(wrong separator\? it contains ','\)",
        ),
        (GOOD + b"1::3::4\n", None, r"ratings\.dat, line 3: expected 4 fields.*found 3"),
        (GOOD + b"1::3::4::300::9\n", None, r"ratings\.dat, line 3: expected 4 fields.*found 5"),
        (GOOD + b"1::x3::4::300\n", None, r"ratings\.dat, line 3: field 'item_id' = 'x3' is not an integer"),
        (GOOD + b"u7::3::4::300\n", None, r"ratings\.dat, line 3: field 'user_id' = 'u7' is not an integer"),
        (
            GOOD + b"1::3::4::2001-01-01\n",
            None,
            r"line 3: field 'timestamp' = '2001-01-01' is not an integer",
        ),
        (GOOD + b"1::3::high::300\n", None, r"line 3: field 'rating' = 'high' is not a finite number"),
        (GOOD + b"1::3::nan::300\n", None, r"line 3: field 'rating' = 'nan' is not a finite number"),
        (GOOD + b"1::3::4::30", None, r"ratings\.dat does not end with a newline: the file looks truncated"),
        (b"", None, r"ratings\.dat is empty \(0 bytes\)"),
        (GOOD + b"1::7::4::300\n", None, r"ratings\.dat, line 3: movie id 7 is not in .*movies\.dat"),
        (GOOD + b"1::0::4::300\n", None, r"ratings\.dat, line 3: movie id 0 is not in"),
        (
            GOOD + b"0::2::4::300\n",
            None,
            r"ratings\.dat, line 3: user id 0 < 1 \(MovieLens user ids start at 1",
        ),
        (GOOD + b"1::2::4::300\n-7::1::3::1\n", None, r"ratings\.dat, line 4: user id -7 < 1"),
        (
            GOOD + b"9999999999999999999::2::4::300\n",
            None,
            r"line 3: field 'user_id' = '9999999999999999999' is outside the int64 range",
        ),
        ("1::1::5::100\n".encode("utf-16"), None, r"ratings\.dat looks like UTF-16 text \(byte-order mark"),
        (None, "1::A::x\n".encode("utf-16"), r"movies\.dat looks like UTF-16 text \(byte-order mark"),
        (None, b"1::A::x\n1::B::y\n", r"movies\.dat, line 2: movie id 1 already defined on line 1"),
        (None, b"1;Toy Story (1995);Animation\n", r"movies\.dat, line 1: expected 3 fields.*it contains ';'"),
        (None, b"", r"movies\.dat is empty"),
    ],
)
def test_bad_input_names_file_line_value(tmp_path: Path, ratings, movies, pattern) -> None:
    source = ml1m(_error_case(tmp_path, ratings, movies), tmp_path)
    with pytest.raises(ValueError, match=pattern):
        source.prepare(tmp_path / "root")
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []


def test_missing_raw_dir_names_the_files(tmp_path: Path) -> None:
    source = MovieLens1M(raw_dir=str(tmp_path / "nowhere"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match=r"nowhere/ratings\.dat.*ml-1m\.zip"):
        source.prepare(tmp_path / "root")


def test_ml20m_format(tmp_path: Path) -> None:
    raw = tmp_path / "ml-20m"
    raw.mkdir()
    (raw / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,3.5,1112484676\n2,2,4.0,974820889\n"
    )
    (raw / "movies.csv").write_text(
        'movieId,title,genres\n2,Jumanji (1995),Adventure\n11,"American President, The (1995)",Comedy\n'
        "29,City of Lost Children (1995),Drama\n"
    )
    source = MovieLens20M(cache_dir=str(tmp_path / "cache"), verify_statistics=False)
    directory = source.prepare(tmp_path)  # found in <root>/ml-20m, no download
    data = read_canonical(directory)
    assert data.item_ids.tolist() == [29, 2, 2]
    assert data.ratings.tolist() == [3.5, 3.5, 4.0]
    assert data.corpus_item_ids.tolist() == [2, 11, 29]
    assert (
        pd.read_parquet(directory / "items.parquet")["title"].tolist()[1] == "American President, The (1995)"
    )
    (raw / "ratings.csv").write_text("user,movie,rating,ts\n1,2,3.5,1\n")
    with pytest.raises(
        ValueError, match=r"ratings\.csv, line 1: expected the header 'userId,movieId,rating,timestamp'"
    ):
        MovieLens20M(cache_dir=str(tmp_path / "c2"), verify_statistics=False).prepare(tmp_path)


def test_ml100k_format_and_pinned_checksum(tmp_path: Path) -> None:
    raw = tmp_path / "ml-100k"
    raw.mkdir()
    (raw / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t4\t881250950\n")
    flags = "|".join(["0"] * 18 + ["1"])
    (raw / "u.item").write_bytes(
        f"242|Kolya (1996)|24-Jan-1997||http://x|{flags}\n302|L.A. Confidential (1997)|01-Jan-1997||u|{flags}\n".encode(
            "latin-1"
        )
    )
    data = read_canonical(
        MovieLens100K(cache_dir=str(tmp_path / "c"), verify_statistics=False).prepare(tmp_path)
    )
    assert data.user_ids.tolist() == [186, 196]
    assert data.item_ids.tolist() == [302, 242, 302]
    with pytest.raises(ValueError, match=r"checksum mismatch for .*u\.data: sha256 .*expected 06416e59"):
        MovieLens100K(cache_dir=str(tmp_path / "c2")).prepare(tmp_path)


def test_read_only_root_falls_back_to_cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ro"
    write_ml1m(root / "ml-1m")
    root.chmod(0o555)
    monkeypatch.setenv("RAILS_CACHE_DIR", str(tmp_path / "envcache"))
    try:
        directory = MovieLens1M(verify_statistics=False).prepare(root)
    finally:
        root.chmod(0o755)
    assert directory.parent == tmp_path / "envcache"
    assert sorted(p.name for p in root.iterdir()) == ["ml-1m"]


# ---- real files from ../shared/data ---------------------------------------------------------------------


def test_real_ml100k_statistics(shared_data_dir: Path, tmp_path: Path) -> None:
    source = MovieLens100K(raw_dir=str(shared_data_dir / "ml-100k"), cache_dir=str(tmp_path))
    directory = source.prepare(shared_data_dir)  # verify_statistics=True: 943 / 100,000 / 1,682
    meta = json.loads((directory / "meta.json").read_text())
    assert (meta["num_users"], meta["num_interactions"], meta["num_items"]) == (943, 100000, 1682)
    data = read_canonical(directory)
    assert data.lengths().min() >= 20
    first = np.flatnonzero(data.user_ids == 196)[0]
    ts = data.timestamps[data.offsets[first] : data.offsets[first + 1]]
    assert (np.diff(ts) >= 0).all()


def test_real_ml1m_movies_with_generated_ratings(shared_data_dir: Path, tmp_path: Path) -> None:
    movies = shared_data_dir / "ml-1m-meta" / "movies.dat"
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    ids = [int(line.split(b";")[0]) for line in movies.read_bytes().splitlines()]
    lines = [
        f"{u}::{rng.choice(ids)}::{rng.integers(1, 6)}::{978300760 + k}\n"
        for k, u in enumerate([1] * 5 + [2] * 5)
    ]
    (raw / "ratings.dat").write_text("".join(lines))
    common = {
        "ratings_file": str(raw / "ratings.dat"),
        "movies_file": str(movies),
        "cache_dir": str(tmp_path / "c"),
    }
    # The shared copy of movies.dat uses ';' where the official release uses '::': rejected by default ...
    with pytest.raises(ValueError, match=r"movies\.dat, line 1: expected 3 fields separated by '::'.*';'"):
        MovieLens1M(verify_statistics=False, **common).prepare(tmp_path)
    # ... and read when the separator is named explicitly.
    source = MovieLens1M(verify_statistics=False, movies_separator=";", **common)
    data = read_canonical(source.prepare(tmp_path))
    assert len(data.corpus_item_ids) == 3883
    assert data.corpus_item_ids.max() == 3952
    assert data.meta["num_interactions"] == 10
