"""Amazon Books source on small headerless ``user,item,rating,timestamp`` files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rails.datamodules.amazon import AmazonBooks
from rails.datamodules.canonical import read_canonical

X_ITEMS = ["B5", "B4", "B3", "B2", "B1"]  # first-appearance order is the reverse of sorted order


def raw_rows() -> list[tuple[str, str, float, int]]:
    rows = []
    t = 1_000_000
    for u in ["U1", "U2", "U3", "U4", "U5"]:
        for item in X_ITEMS:  # each X item: 5 raw rows (+1 from U6 below)
            rows.append((u, item, 5.0, t))
            t += 10
    for u in ["U1", "U2", "U3", "U4"]:  # Z: 4 rows here + 1 from U8 (a 1-row user) = exactly 5 raw rows
        rows.append((u, "A9", 4.0, t))
        t += 10
    rows.append(("U8", "A9", 3.0, t))
    rows.append(("U6", "B5", 2.0, t))  # U6: 5 raw rows, but 4 are on rare items -> 1 row after the filter
    rows += [("U6", f"R{k}", 1.0, t + k) for k in range(1, 5)]
    return rows


def write_csv(path: Path, rows) -> Path:
    path.write_text("".join(f"{u},{i},{r},{ts}\n" for u, i, r, ts in rows))
    return path


def books(path: Path, tmp_path: Path, **kw) -> AmazonBooks:
    return AmazonBooks(raw_file=str(path), cache_dir=str(tmp_path / "cache"), verify_statistics=False, **kw)


def test_single_pass_filter_remap_and_short_users(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "ratings_Books.csv", raw_rows())
    directory = books(path, tmp_path).prepare(tmp_path / "root")
    data = read_canonical(directory)
    items = pd.read_parquet(directory / "items.parquet")
    # Z (A9) has 5 raw rows but only 4 after the row filter: a single pass keeps it (a k-core would not).
    assert items["asin"].tolist() == ["A9", "B1", "B2", "B3", "B4", "B5"]  # codes in sorted raw-id order
    assert data.corpus_item_ids.tolist() == [1, 2, 3, 4, 5, 6]
    # U6 survives the row filter with 1 row, then is dropped (< 5 items); U8 is dropped by the row filter.
    assert data.user_ids.tolist() == [1, 2, 3, 4, 5]
    assert data.lengths().tolist() == [6, 6, 6, 6, 5]
    first = data.item_ids[: data.offsets[1]].tolist()
    assert first == [6, 5, 4, 3, 2, 1]  # U1 chronological: B5, B4, B3, B2, B1, A9
    assert data.meta["num_interactions"] == 29


def test_statistics_are_checked(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "r.csv", raw_rows())
    source = AmazonBooks(raw_file=str(path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(
        ValueError, match=r"num_raw_ratings=35 \(published 22,507,155\).*num_items=6 \(published 695,762\)"
    ):
        source.prepare(tmp_path)
    assert not (tmp_path / "cache").exists()
    with pytest.raises(ValueError, match="verify_statistics=true checks the paper's statistics"):
        AmazonBooks(min_user_count=3)
    with pytest.raises(ValueError, match=r"data.source.min_item_count must be >= 1"):
        AmazonBooks(min_item_count=0, verify_statistics=False)


GOOD = "U1,B1,5.0,100\nU1,B2,4.0,200\n"


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (GOOD + "U1,B3,4.0,yesterday\n", r"line 3: field 'timestamp' = 'yesterday' is not an integer"),
        (GOOD + "U1,B3,4.0\n", r"line 3: expected 4 fields separated by ','.*found 3"),
        (GOOD + "U1,B3,4.0,300,x\n", r"line 3: expected 4 fields.*found 5"),
        ("user,item,rating,timestamp\n" + GOOD, r"line 1: field 'rating' = 'rating' is not a finite number"),
        (
            GOOD + "U1\tB3\t4.0\t300\n",
            r"line 3: expected 4 fields.*found 1 \(wrong separator\? it contains '\\t'\)",
        ),
        (GOOD + ",B3,4.0,300\n", r"line 3: field 'user' is empty"),
        ("", r"r\.csv is empty \(0 bytes\)"),
        (
            "U1,B1,5.0,1389657600\nU2,B1,4.0,1389657601\nU1,B2,4.0,13896",
            r"r\.csv, line 3: the file does not end with a newline and its last field 'timestamp' = 13896 is at "
            r"most a tenth of the largest value \(1389657601\): the last line looks cut",
        ),
        (
            GOOD + "U1,B3,4.0,99999999999999999999\n",
            r"line 3: field 'timestamp' = '99999999999999999999' is outside",
        ),
    ],
)
def test_bad_input(tmp_path: Path, text: str, pattern: str) -> None:
    path = tmp_path / "r.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=pattern):
        books(path, tmp_path).prepare(tmp_path)
    assert not (tmp_path / "cache").exists()


def test_missing_file_without_download_says_where(tmp_path: Path) -> None:
    source = AmazonBooks(download=False, cache_dir=str(tmp_path / "c"))
    with pytest.raises(
        RuntimeError, match=r"ratings_Books\.csv.*place it at .*amzn-books/ratings_Books\.csv"
    ):
        source.prepare(tmp_path / "root")


def test_non_text_file_says_what_it_looks_like(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes(GOOD.encode("utf-16"))
    with pytest.raises(ValueError, match=r"r\.csv looks like UTF-16 text \(byte-order mark FF FE\)"):
        books(path, tmp_path).prepare(tmp_path)


def test_user_ids_are_opaque_strings_so_zero_and_negative_are_ordinary_users(tmp_path: Path) -> None:
    # Amazon user ids are strings remapped to 1..U (0 stays padding), so "0" and "-1" are users like any other.
    path = write_csv(
        tmp_path / "r.csv", [("U1", "B1", 5.0, 100), ("0", "B1", 4.0, 90), ("-1", "B1", 3.0, 80)]
    )
    source = books(path, tmp_path, min_user_count=1, min_item_count=1, min_sequence_length=1)
    data = read_canonical(source.prepare(tmp_path))
    assert data.user_ids.tolist() == [1, 2, 3]  # sorted raw ids "-1", "0", "U1"
    assert data.lengths().tolist() == [1, 1, 1] and data.ratings.tolist() == [3.0, 4.0, 5.0]
