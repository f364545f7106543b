"""data=interactions: CSV/TSV/parquet tables, column mapping, filters, k-core, bad input, ML-100K equivalence."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.core.global_hydra import GlobalHydra

from rails.datamodules.canonical import read_canonical
from rails.datamodules.interactions import InteractionTable, count_filter
from rails.datamodules.movielens import MovieLens100K
from rails.train import run
from tests.conftest import TINY_OVERRIDES, compose_config, shrink

# user, item, rating, ts; u1 has a timestamp tie (i3 before i1 in the file) and a repeated (u1, i3)
CSV = "uid,sku,stars,ts\nu1,i3,4,100\nu2,i5,3,300\nu1,i1,5,100\nu1,i2,2,50\nu2,i2,4,200\nu1,i3,1,400\n"


def table(tmp_path: Path, text: str = CSV, name: str = "log.csv", **kwargs) -> InteractionTable:
    path = tmp_path / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    columns = kwargs.pop("columns", {"user": "uid", "item": "sku", "timestamp": "ts", "rating": "stars"})
    return InteractionTable(path=str(path), columns=columns, cache_dir=str(tmp_path / "cache"), **kwargs)


def sequences(directory: Path) -> dict[str, list[int]]:
    data = read_canonical(directory)
    raw = dict(pd.read_parquet(directory / "items.parquet")[["item_id", "raw_id"]].itertuples(index=False))
    return {
        int(u): [raw[i] for i in data.item_ids[a:b].tolist()]
        for u, a, b in zip(data.user_ids, data.offsets[:-1], data.offsets[1:])
    }


def test_csv_ties_duplicates_and_ids(tmp_path: Path) -> None:
    directory = table(tmp_path).prepare(tmp_path / "root")
    # users u1, u2 -> 1, 2 (sorted text); chronological, the ts-100 tie keeps file order (i3, i1)
    assert sequences(directory) == {1: ["i2", "i3", "i1", "i3"], 2: ["i2", "i5"]}
    data = read_canonical(directory)
    assert data.ratings.tolist() == [2, 4, 5, 1, 4, 3]
    assert data.meta["settings"]["timestamps"] == "column"
    first = table(tmp_path, duplicates="first").prepare(tmp_path / "root")
    assert sequences(first)[1] == ["i2", "i3", "i1"]
    last = table(tmp_path, duplicates="last").prepare(tmp_path / "root")
    assert sequences(last)[1] == ["i2", "i1", "i3"]
    rated = table(tmp_path, min_rating=3.0).prepare(tmp_path / "root")
    assert sequences(rated) == {1: ["i3", "i1"], 2: ["i2", "i5"]}


def test_headerless_tsv_gzip_positions_and_parquet(tmp_path: Path) -> None:
    text = "".join("\t".join(line.split(",")) + "\n" for line in CSV.splitlines()[1:])
    cols = {"user": 0, "item": 1}  # no timestamp: file order is time order, positions 0..n-1
    src = table(tmp_path, text, "log.tsv.gz", header=False, columns=cols)
    directory = src.prepare(tmp_path / "root")
    assert sequences(directory) == {1: ["i3", "i1", "i2", "i3"], 2: ["i5", "i2"]}
    data = read_canonical(directory)
    assert (
        data.timestamps.tolist() == [0, 1, 2, 3, 0, 1] and data.meta["settings"]["timestamps"] == "positions"
    )
    frame = pd.DataFrame({"user": [7, 7, 9], "item": [3, 1, 3], "t": pd.to_datetime([5, 9, 1], unit="s")})
    frame.to_parquet(tmp_path / "log.parquet")
    src = InteractionTable(
        path="log.parquet",
        columns={"user": "user", "item": "item", "timestamp": "t"},
        cache_dir=str(tmp_path),
    )
    data = read_canonical(src.prepare(tmp_path))  # relative path: resolved against the data root
    assert data.user_ids.tolist() == [7, 9] and data.item_ids.tolist() == [3, 1, 3]
    assert data.timestamps.tolist() == [5, 9, 1]


def test_k_core_iterative_vs_single_pass() -> None:
    # item 2 has one row: a single pass drops only that row; iterating, user 1 is then left with one row,
    # so item 1 and then user 0 fall below 2 as well, and only user 2's rows of item 0 remain.
    users = np.array([0, 0, 1, 1, 2, 2])
    items = np.array([0, 1, 1, 2, 0, 0])
    keep = np.ones(6, dtype=bool)
    single = count_filter(users, items, keep, 2, 2, "single_pass")
    assert single.tolist() == [True, True, True, False, True, True]
    assert count_filter(users, items, keep, 2, 2, "iterative").tolist() == [
        False,
        False,
        False,
        False,
        True,
        True,
    ]


BAD = [
    ({"columns": {"user": "usr", "item": "sku"}}, CSV, r"log\.csv, line 1 \(header\): unknown column 'usr'"),
    (
        {},
        CSV.replace("u2,i2,4,200", "u2,i2,4,2001-01-01"),
        r"log\.csv, line 6, field 4 \(timestamp\) = '2001",
    ),
    ({}, CSV.replace("u2,i5,3,300", "u2,i5,3"), r"log\.csv, line 3: 3 fields separated by ','"),
    ({}, CSV.replace("u2,i5,3,300", "u2,i5,x,300"), r"log\.csv, line 3, field 3 \(rating\) = 'x' is not"),
    ({}, CSV.replace("u2,i5,3,300", ",i5,3,300"), r"log\.csv, line 3, field 1 \(user\) is empty"),
    ({"min_rating": 9.0}, CSV, r"log\.csv: no interactions left after filtering .*min_rating=9\.0"),
]


@pytest.mark.parametrize(("kwargs", "text", "pattern"), BAD)
def test_bad_input_names_file_and_line(tmp_path: Path, kwargs, text, pattern) -> None:
    with pytest.raises(ValueError, match=pattern):
        table(tmp_path, text, **kwargs).prepare(tmp_path / "root")
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []


def test_config_errors() -> None:
    with pytest.raises(ValueError, match=r"columns: unknown role\(s\) \['time'\]"):
        InteractionTable(path="x.csv", columns={"user": "a", "item": "b", "time": "c"})
    with pytest.raises(ValueError, match="min_rating needs data.source.columns.rating"):
        InteractionTable(path="x.csv", min_rating=3.0)
    with pytest.raises(ValueError, match=r"k_core must be one of \['iterative', 'single_pass'\]"):
        InteractionTable(path="x.csv", k_core="full")


def test_ml100k_csv_prepares_like_the_movielens_source(shared_data_dir: Path, tmp_path: Path) -> None:
    raw = shared_data_dir / "ml-100k"
    rows = pd.read_csv(raw / "u.data", sep="\t", header=None, names=["user", "item", "rating", "ts"])
    rows.to_csv(tmp_path / "u.csv", index=False)
    source = InteractionTable(
        path=str(tmp_path / "u.csv"),
        columns={"user": "user", "item": "item", "timestamp": "ts", "rating": "rating"},
        cache_dir=str(tmp_path / "a"),
    )
    ours = read_canonical(source.prepare(tmp_path))
    official = read_canonical(
        MovieLens100K(raw_dir=str(raw), cache_dir=str(tmp_path / "b")).prepare(tmp_path)
    )
    for field in ("user_ids", "offsets", "item_ids", "timestamps", "ratings", "corpus_item_ids"):
        np.testing.assert_array_equal(getattr(ours, field), getattr(official, field), err_msg=field)


def test_cli_trains_and_evaluates_from_a_fresh_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = [(f"user{u}", int(rng.integers(1, 50)), 1_700_000_000 + k) for u in range(40) for k in range(8)]
    path = tmp_path / "in" / "log.csv"
    path.parent.mkdir()
    path.write_text("who,what,when\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    tiny = [o for o in TINY_OVERRIDES if not o.startswith("data.")]
    overrides = [
        "data=interactions",
        f"data.source.path={path}",
        "data.source.columns.user=who",
        "data.source.columns.item=what",
        "data.source.columns.timestamp=when",
        "data.max_seq_len=10",
        "data.batch_size=16",
        *tiny,
    ]
    cfg = shrink(compose_config("train", overrides), tmp_path)
    metrics = run(cfg)
    GlobalHydra.instance().clear()
    assert 0.0 <= metrics["test/hr@10"] <= 1.0
    (prepared,) = [p for p in (tmp_path / "data").iterdir() if p.name.startswith("interactions-")]
    meta = json.loads((prepared / "meta.json").read_text())
    assert (meta["num_users"], meta["num_interactions"]) == (40, len(rows))


def test_utf8_bom_header(tmp_path: Path) -> None:
    data = read_canonical(table(tmp_path, "\ufeff" + CSV).prepare(tmp_path / "root"))
    assert data.num_users == 2
