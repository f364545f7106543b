"""data=sequences: per-user sequence files, timestamps, catalogue, id rule, bad input, presets, real files."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from rails.datamodules.canonical import read_canonical
from rails.datamodules.ids import assign_ids
from rails.datamodules.sequence_files import SequenceFiles
from rails.train import run
from tests.conftest import TINY_OVERRIDES, compose_config, shrink

ITEMS = "7 5 3 5\n2 B0X 3\n\n10 3 9 1\n"
STAMPS = "7 100 100 200\n2 50 60\n\n10 1 2 3\n"


def write(directory: Path, name: str, text: str) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return str(directory / name)


def source(tmp_path: Path, **kwargs) -> SequenceFiles:
    return SequenceFiles(cache_dir=str(tmp_path / "cache"), **kwargs)


def sequences_of(directory: Path) -> dict[int, tuple[list[int], list[int]]]:
    data = read_canonical(directory)
    bounds = zip(data.offsets[:-1], data.offsets[1:])
    return {
        int(u): (data.item_ids[a:b].tolist(), data.timestamps[a:b].tolist())
        for u, (a, b) in zip(data.user_ids, bounds)
    }


def test_id_rule() -> None:
    ids = assign_ids(np.array(["12", "B0X", "3", "0", "007", "-1", "A1"], dtype=object))
    # integers >= 1 kept; the others get 13, 14, ... in sorted order of their text: -1, 0, 007, A1, B0X
    assert ids.tolist() == [12, 17, 3, 14, 15, 13, 16]
    assert assign_ids(np.array([5, 0, 2], dtype=np.int64)).tolist() == [5, 6, 2]


def test_items_timestamps_and_ids(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    src = source(
        tmp_path, items_file=write(raw, "items.txt", ITEMS), timestamps_file=write(raw, "ts.txt", STAMPS)
    )
    directory = src.prepare(tmp_path / "root")
    # "B0X" is not an integer: it becomes max(kept ids) + 1 = 10
    assert sequences_of(directory) == {
        2: ([10, 3], [50, 60]),
        7: ([5, 3, 5], [100, 100, 200]),
        10: ([3, 9, 1], [1, 2, 3]),
    }
    meta = json.loads((directory / "meta.json").read_text())
    assert (meta["num_users"], meta["num_interactions"], meta["num_items"]) == (3, 8, 5)
    assert meta["settings"]["timestamps"] == "file"
    items = pd.read_parquet(directory / "items.parquet")
    assert dict(zip(items["item_id"], items["raw_id"])) == {1: "1", 3: "3", 5: "5", 9: "9", 10: "B0X"}


def test_positions_catalogue_and_relative_paths(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "d", "seq.txt", "1 3 2\n2 2\n")
    write(
        root / "d",
        "movies.dat",
        "1::Toy Story (1995)::Animation\n2::Heat::Action\n3::Fargo::Crime\n4::X::Y\n",
    )
    directory = source(tmp_path, items_file="d/seq.txt", catalog_file="d/movies.dat").prepare(root)
    assert sequences_of(directory) == {1: ([3, 2], [0, 1]), 2: ([2], [0])}
    data = read_canonical(directory)
    assert data.corpus_item_ids.tolist() == [1, 2, 3, 4]  # never-seen catalogue items are candidates
    assert data.meta["settings"]["timestamps"] == "positions"
    info = pd.read_parquet(directory / "items.parquet")["info"].tolist()
    assert info[0] == "Toy Story (1995)::Animation"


BAD = [
    ("items", "1 2 3\n2\n", None, None, r"items\.txt, line 2: user '2' has no items"),
    ("items", "1 2 3\n\n1 4\n", None, None, r"items\.txt, line 3: user '1' already has a line \(line 1\)"),
    ("stamps", ITEMS, "7 1 2 3\n2 5 6 7\n\n10 1 2 3\n", None, r"ts\.txt, line 2: 3 timestamps .* \(ragged"),
    ("stamps", ITEMS, "7 1 2 x\n2 5 6\n10 1 2 3\n", None, r"ts\.txt, line 1, field 4: timestamp 'x' is not"),
    (
        "stamps",
        ITEMS,
        "7 1 2 3\n2 5 6\n10 1 3 2\n",
        None,
        r"ts\.txt, line 3, field 4: timestamp 2 is smaller",
    ),
    ("stamps", ITEMS, "7 1 2 3\n2 5 6\n", None, r"ts\.txt has 2 user lines but .*items\.txt has 3"),
    ("stamps", ITEMS, "7 1 2 3\n3 5 6\n10 1 2 3\n", None, r"ts\.txt, line 2, field 1: user '3', but line 2"),
    (
        "catalog",
        "1 2 3\n2 2 8\n",
        None,
        "2\n3\n",
        r"items\.txt, line 2, field 3: item '8' is not in the cata",
    ),
    (
        "catalog",
        "1 2 3\n",
        None,
        "2::a\n3::b\n2::c\n",
        r"cat\.txt, line 3: item '2' already defined on line 1",
    ),
]


@pytest.mark.parametrize(("case", "items", "stamps", "catalog", "pattern"), BAD)
def test_bad_input_names_file_and_line(tmp_path: Path, case, items, stamps, catalog, pattern) -> None:
    raw = tmp_path / "raw"
    kwargs = {"items_file": write(raw, "items.txt", items)}
    if stamps is not None:
        kwargs["timestamps_file"] = write(raw, "ts.txt", stamps)
    if catalog is not None:
        kwargs["catalog_file"] = write(raw, "cat.txt", catalog)
    with pytest.raises(ValueError, match=pattern):
        source(tmp_path, **kwargs).prepare(tmp_path / "root")
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []


def test_missing_file_and_config_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"data\.source\.items_file .*nope\.txt not found"):
        source(tmp_path, items_file=str(tmp_path / "nope.txt")).prepare(tmp_path)
    with pytest.raises(ValueError, match="items_file is required"):
        SequenceFiles().prepare(tmp_path)
    with pytest.raises(ValueError, match="needs data.source.expected"):
        SequenceFiles(items_file="x", verify_statistics=True)
    src = source(
        tmp_path,
        items_file=write(tmp_path, "i.txt", "1 2\n"),
        verify_statistics=True,
        expected={"num_users": 2},
    )
    with pytest.raises(ValueError, match=r"num_users=1 \(published 2\)"):
        src.prepare(tmp_path)


def _train_overrides(files: dict[str, str]) -> list[str]:
    tiny = [o for o in TINY_OVERRIDES if not o.startswith("data.")]
    return [
        "data=sequences",
        *(f"data.source.{k}={v}" for k, v in files.items()),
        "data.max_seq_len=10",
        "data.batch_size=16",
        "data.eval_batch_size=32",
        *tiny,
    ]


def test_cli_trains_and_evaluates_from_fresh_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    items, stamps = [], []
    for user in range(1, 41):
        n = int(rng.integers(4, 12))
        items.append(f"u{user} " + " ".join(f"i{int(x)}" for x in rng.integers(1, 60, n)))
        stamps.append(f"u{user} " + " ".join(str(1_600_000_000 + 60 * k) for k in range(n)))
    files = {
        "items_file": write(tmp_path / "in", "items.txt", "\n".join(items) + "\n"),
        "timestamps_file": write(tmp_path / "in", "ts.txt", "\n".join(stamps) + "\n"),
    }
    cfg = shrink(compose_config("train", _train_overrides(files)), tmp_path)
    metrics = run(cfg)
    GlobalHydra.instance().clear()
    assert 0.0 <= metrics["test/hr@10"] <= 1.0
    (prepared,) = [p for p in (tmp_path / "data").iterdir() if p.name.startswith("sequences-")]
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["num_users"] == 40
    assert meta["num_interactions"] == sum(len(line.split()) - 1 for line in items)


ML_1M_SEQ = ["sasrec_dot", "sasrec_mol", "hstu_dot", "hstu_large_dot", "hstu_large_mol"]


@pytest.mark.parametrize("model", ML_1M_SEQ)
def test_ml_1m_seq_presets_swap_only_the_data(model: str) -> None:
    seq = compose_config("train", [f"experiment=ml_1m_seq_{model}", "data.source.items_file=/x/s.txt"])
    base = compose_config("train", [f"experiment=ml_1m_{model}"])
    GlobalHydra.instance().clear()
    assert seq.data.source._target_ == "rails.datamodules.sequence_files.SequenceFiles"
    assert seq.data.source.items_file == "/x/s.txt"  # the command line still wins
    assert seq.data.max_seq_len == 200 and seq.hydra.runtime.choices.data == "ml_1m_seq"
    for key in ("model", "trainer", "retrieval", "callbacks"):
        assert OmegaConf.to_container(seq[key]) == OmegaConf.to_container(base[key]), key


@pytest.mark.parametrize("model", ["sasrec_dot", "sasrec_mol", "hstu_large_dot", "hstu_large_mol"])
def test_amazon_beauty_presets_compose(model: str) -> None:
    cfg = compose_config("train", [f"experiment=amazon_beauty_{model}"])
    books = compose_config("train", [f"experiment=amzn_books_{model}"])
    GlobalHydra.instance().clear()
    assert cfg.data.source.dataset == "amazon-beauty" and cfg.data.max_seq_len == 50
    assert OmegaConf.to_container(cfg.model) == OmegaConf.to_container(books.model)
    datamodule = hydra.utils.instantiate(cfg.data)
    assert isinstance(datamodule.source, SequenceFiles)


def _prepare_preset(option: str, shared: Path, tmp_path: Path) -> Path:
    cfg = compose_config("train", [f"data={option}", f"data.root={shared}"])
    GlobalHydra.instance().clear()
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.source.cache_dir = str(tmp_path / "cache")
    return datamodule.source.prepare(shared)


def test_real_ml_1m_seq(shared_data_dir: Path, tmp_path: Path) -> None:
    directory = _prepare_preset("ml_1m_seq", shared_data_dir, tmp_path)  # verify_statistics=true
    data = read_canonical(directory)
    assert (data.meta["num_users"], data.meta["num_rated_items"]) == (6040, 3706)
    assert (data.meta["num_items"], data.meta["num_interactions"]) == (3883, 1000209)
    assert data.user_ids[0] == 1 and data.item_ids[:3].tolist() == [3186, 1721, 1022]
    assert data.timestamps[: data.offsets[1]].tolist() == list(range(data.offsets[1]))
    assert data.meta["settings"]["timestamps"] == "positions"


def test_real_amazon_beauty(shared_data_dir: Path, tmp_path: Path) -> None:
    data = read_canonical(_prepare_preset("amazon_beauty", shared_data_dir, tmp_path))
    assert (data.meta["num_users"], data.meta["num_items"], data.meta["num_interactions"]) == (
        22363,
        12101,
        198502,
    )
    within_user = np.diff(data.timestamps)[np.diff(np.repeat(np.arange(data.num_users), data.lengths())) == 0]
    assert (within_user >= 0).all() and data.timestamps.min() == 1023840000


S3REC = {
    "amazon_sports": ("Sports_and_Outdoors.txt", (35598, 18357, 296337)),
    "amazon_toys": ("Toys_and_Games.txt", (19412, 11924, 167597)),
    "yelp": ("Yelp.txt", (30431, 20033, 316354)),
    "amazon_beauty_s3rec": ("Beauty.txt", (22363, 12101, 198502)),
}


@pytest.mark.parametrize("option", sorted(S3REC))
def test_s3rec_presets_pin_the_public_files(option: str) -> None:
    cfg = compose_config("train", [f"data={option}", "data.root=/nonexistent"])
    GlobalHydra.instance().clear()
    src = hydra.utils.instantiate(cfg.data).source  # nothing is read or downloaded before prepare
    filename, (users, items, interactions) = S3REC[option]
    assert src.url == f"https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/master/data/{filename}"
    assert len(src.sha256) == 64 and src.download and src.verify_statistics
    assert src.expected == {
        "num_users": users,
        "num_items": items,
        "num_rated_items": items,
        "num_interactions": interactions,
    }
    assert cfg.data.max_seq_len == 50
    for model in ("sasrec_dot", "sasrec_mol", "hstu_large_dot", "hstu_large_mol"):
        if option != "amazon_beauty_s3rec":
            exp = compose_config("train", [f"experiment={option}_{model}"])
            assert exp.hydra.runtime.choices.data == option and exp.data.max_seq_len == 50
    GlobalHydra.instance().clear()


def test_real_toys_local_copy_verified(shared_data_dir: Path, tmp_path: Path) -> None:
    data = read_canonical(_prepare_preset("amazon_toys", shared_data_dir, tmp_path))
    assert (data.meta["num_users"], data.meta["num_items"], data.meta["num_interactions"]) == (
        19412,
        11924,
        167597,
    )


def test_download_when_absent_through_fetch(shared_data_dir: Path, tmp_path: Path) -> None:
    local = shared_data_dir / "amazon-beauty" / "s3rec_Beauty.txt"
    if not local.is_file():
        pytest.skip(f"{local} is absent")
    cfg = compose_config("train", ["data=amazon_beauty_s3rec", f"data.root={tmp_path / 'root'}"])
    GlobalHydra.instance().clear()
    src = hydra.utils.instantiate(cfg.data).source
    src.url = local.as_uri()  # a file:// URL: the real download code path, no network
    src.download = False
    with pytest.raises(Exception, match=r"amazon-beauty/Beauty\.txt is absent .*downloads are disabled"):
        src.prepare(tmp_path / "root")
    src.download = True
    data = read_canonical(src.prepare(tmp_path / "root"))
    assert (tmp_path / "root" / "amazon-beauty" / "Beauty.txt").is_file()
    assert (data.meta["num_users"], data.meta["num_interactions"]) == (22363, 198502)


def test_local_copy_with_wrong_checksum_is_refused(tmp_path: Path) -> None:
    cfg = compose_config("train", ["data=amazon_toys", f"data.root={tmp_path}"])
    GlobalHydra.instance().clear()
    write(tmp_path / "amazon-toys", "Toys_and_Games.txt", "1 2 3\n")
    with pytest.raises(ValueError, match=r"checksum mismatch for .*Toys_and_Games\.txt"):
        hydra.utils.instantiate(cfg.data).source.prepare(tmp_path)


def test_byte_order_mark_and_sparse_id_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "items.txt"
    path.write_bytes("\ufeff1 2 3\n2 3 2000000000\n".encode())
    with caplog.at_level("WARNING"):
        data = read_canonical(source(tmp_path, items_file=str(path)).prepare(tmp_path))
    assert data.user_ids.tolist() == [1, 2]  # the BOM is not part of user 1's id
    assert "the largest is 2,000,000,000" in caplog.text
