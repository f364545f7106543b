"""Canonical format, leave-last-out splits and the synthetic generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rails.batch import collate_sequences
from rails.datamodules.canonical import is_canonical, read_canonical, write_canonical
from rails.datamodules.seq_rec import SequentialDataModule
from rails.datamodules.sequences import SequenceExamples
from rails.datamodules.synthetic import SyntheticSequences


def _write(tmp_path: Path, sequences: list[list[int]]) -> Path:
    frame = pd.DataFrame(
        {
            "user_id": np.arange(1, len(sequences) + 1),
            "item_ids": sequences,
            "timestamps": [list(range(100, 100 + len(s))) for s in sequences],
            "ratings": [[4.0] * len(s) for s in sequences],
        }
    )
    items = pd.DataFrame({"item_id": np.arange(1, 21)})
    return write_canonical(tmp_path / "ds", frame, items, name="toy", settings={"v": 1})


def _examples(tmp_path: Path, split: str, n: int, holdout: int = 1) -> list[dict]:
    data = read_canonical(_write(tmp_path, [[1, 2, 3, 4, 5, 6], [7, 8], [9, 10, 11]]))
    ds = SequenceExamples(data, split, max_seq_len=n, holdout=holdout)
    return [ds[i] for i in range(len(ds))]


def test_leave_one_out_train_split(tmp_path: Path) -> None:
    rows = _examples(tmp_path, "train", n=3)
    # user 1: drop 6, target 5, history = last 3 before it; user 2 (2 items) has no train example
    assert [r["user_ids"].item() for r in rows] == [1, 3]
    assert rows[0]["history_ids"].tolist() == [2, 3, 4]
    assert rows[0]["target_ids"].item() == 5
    assert rows[1]["history_ids"].tolist() == [9, 0, 0]
    assert rows[1]["lengths"].item() == 1
    batch = collate_sequences(rows)
    # every prefix is supervised; the last one predicts the train target; nothing after it is seen
    assert batch.next_ids().tolist() == [[3, 4, 5], [10, 0, 0]]
    assert batch.next_timestamps()[0].tolist() == [102, 103, 104]


def test_eval_split_targets_are_never_trained_on(tmp_path: Path) -> None:
    train = {r["user_ids"].item(): r for r in _examples(tmp_path, "train", n=10)}
    test = _examples(tmp_path, "test", n=10)
    assert [r["target_ids"].item() for r in test] == [6, 8, 11]
    for row in test:
        history = row["history_ids"][: row["lengths"]].tolist()
        assert row["target_ids"].item() not in history  # history excludes the target
        user = row["user_ids"].item()
        if user in train:
            batch = collate_sequences([train[user]])
            supervised = (
                batch.next_ids()[batch.valid_mask].tolist() + batch.history_ids[batch.valid_mask].tolist()
            )
            assert row["target_ids"].item() not in supervised


def test_holdout_two_gives_a_separate_validation_item(tmp_path: Path) -> None:
    train = _examples(tmp_path, "train", n=10, holdout=2)
    val = _examples(tmp_path, "val", n=10, holdout=2)
    test = _examples(tmp_path, "test", n=10, holdout=2)
    assert [r["target_ids"].item() for r in train] == [4]  # user 3 (3 items) has no train target left
    assert [r["target_ids"].item() for r in val] == [5, 10]  # user 2 has no history before its val item
    assert [r["target_ids"].item() for r in test] == [6, 8, 11]
    assert [r["user_ids"].item() for r in val] == [1, 3]


def test_write_canonical_validates_and_is_atomic(tmp_path: Path) -> None:
    bad = pd.DataFrame(
        {"user_id": [1], "item_ids": [[1, 0]], "timestamps": [[1, 2]], "ratings": [[1.0, 1.0]]}
    )
    with pytest.raises(ValueError, match="user_id 1: item id 0"):
        write_canonical(tmp_path / "bad", bad, pd.DataFrame({"item_id": [1]}), "bad", {})
    assert not (tmp_path / "bad").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary directory left behind
    unordered = bad.assign(item_ids=[[1, 2]], timestamps=[[5, 2]])
    with pytest.raises(ValueError, match="not chronological"):
        write_canonical(tmp_path / "bad", unordered, pd.DataFrame({"item_id": [1, 2]}), "bad", {})


def test_synthetic_is_seeded_and_structured() -> None:
    source = SyntheticSequences(
        num_users=50, num_items=100, num_clusters=5, min_length=5, max_length=30, seed=3
    )
    first, items = source.generate()
    second, _ = SyntheticSequences(**{**source.__dict__}).generate()
    assert first["item_ids"].map(list).tolist() == second["item_ids"].map(list).tolist()
    for row in first.itertuples():
        assert len(set(row.item_ids)) == len(row.item_ids)  # no repeats within a user
        assert list(row.timestamps) == sorted(row.timestamps)
        clusters = items.set_index("item_id").loc[list(row.item_ids), "cluster"].nunique()
        assert 1 <= clusters <= source.interests_max
    with pytest.raises(ValueError, match="multiple of num_clusters"):
        SyntheticSequences(num_items=101, num_clusters=5)


def test_datamodule_batches_and_corpus(tmp_path: Path) -> None:
    source = SyntheticSequences(num_users=40, num_items=60, num_clusters=4, min_length=5, max_length=20)
    dm = SequentialDataModule(source, root=str(tmp_path), max_seq_len=8, batch_size=16, eval_batch_size=64)
    dm.prepare_data()
    dm.setup("fit")
    assert is_canonical(dm.data_dir)
    assert dm.num_items == 61
    assert torch.equal(dm.corpus_item_ids(), torch.arange(1, 61))
    batch = next(iter(dm.train_dataloader()))
    assert batch.history_ids.shape == (16, 8)
    assert (batch.lengths >= 1).all() and (batch.lengths <= 8).all()
    assert len(dm.dataset("test")) == 40
    counts = dm.item_popularity()
    lengths = dm.data.lengths()
    assert counts.sum().item() == int((lengths - 1).sum())  # every item but each user's test target
    with pytest.raises(ValueError, match="holdout"):
        SequentialDataModule(source, holdout=3)


def test_batched_fetch_equals_one_example_at_a_time(tmp_path: Path) -> None:
    """``__getitems__`` (what the DataLoader calls per batch) stacks exactly the per-example fields."""
    rng = np.random.default_rng(0)
    sequences = [rng.integers(1, 21, size=int(n)).tolist() for n in rng.integers(2, 15, size=40)]
    data = read_canonical(_write(tmp_path, sequences))
    for split, holdout in (("train", 1), ("val", 2), ("test", 1)):
        ds = SequenceExamples(data, split, max_seq_len=6, holdout=holdout)
        order = rng.permutation(len(ds)).tolist()
        stacked = collate_sequences(ds.__getitems__(order))
        one_by_one = collate_sequences([ds[i] for i in order])
        for name in (
            "user_ids",
            "history_ids",
            "history_timestamps",
            "history_ratings",
            "lengths",
            "target_ids",
        ):
            a, b = getattr(stacked, name), getattr(one_by_one, name)
            assert a.dtype == b.dtype and torch.equal(a, b), (split, name)
        # independent of the implementation: every history is the window before the target, zero-padded
        for row, i in enumerate(order):
            user = int(ds.users[i])
            seq = sequences[user]
            target = int(ds.targets[i])
            window = seq[max(0, target - 6) : target]
            assert stacked.history_ids[row].tolist() == window + [0] * (6 - len(window))
            assert stacked.target_ids[row].item() == seq[target]
    loader = torch.utils.data.DataLoader(ds, batch_size=7, collate_fn=collate_sequences)  # batched fetch
    batches = list(loader)
    assert sum(len(b) for b in batches) == len(ds)
    assert batches[0].target_ids.tolist() == [ds[i]["target_ids"].item() for i in range(7)]
