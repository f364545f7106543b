"""QADataModule: question -> passage retrieval over a BEIR-layout dataset, tokenised for an LM encoder.

- Training batches (:class:`~rails.batch.QATrainBatch`): one (question, relevant passage) pair per row, taken from the
  training qrels, plus optionally R passages drawn uniformly from the corpus and shared by the batch.
- Evaluation batches (:class:`~rails.batch.QAEvalBatch`): questions with their graded relevant passages, padded.
- The corpus loader (:meth:`QADataModule.corpus_dataloader`) yields every passage once, in corpus order
  (:class:`~rails.batch.PassageBatch`); passage ``i`` has item id ``i`` and ``num_items`` is the corpus size, so
  ``rails.train.build`` sizes the model exactly as for sequential recommendation.

Texts are tokenised in the collate function (in DataLoader workers when ``num_workers > 0``), truncated to
``query_max_length`` / ``passage_max_length`` tokens and padded to the longest row of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from rails.batch import PassageBatch, QAEvalBatch, QATrainBatch, TokenizedText
from rails.datamodules.beir import BEIRData, BEIRDataset, Qrels, read_beir, select_split
from rails.datamodules.prepared import PreparedDataModule
from rails.datamodules.samplers import ShardedEvalSampler
from rails.pretrained import resolve_pretrained


class _Tokenize:
    """Picklable tokeniser call: list of texts -> TokenizedText truncated to ``max_length``."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, texts: Sequence[str]) -> TokenizedText:
        out = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
        )
        return TokenizedText(out["input_ids"].long(), out["attention_mask"].long())


class _Rows(Dataset):
    """Dataset over an index array; items are the array's rows."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Any:
        return self.rows[index]


class _TrainCollate:
    def __init__(
        self, data: BEIRData, query_tok: _Tokenize, passage_tok: _Tokenize, num_negatives: int
    ) -> None:
        self.data, self.query_tok, self.passage_tok = data, query_tok, passage_tok
        self.num_negatives = num_negatives

    def __call__(self, rows: list[np.ndarray]) -> QATrainBatch:
        pairs = np.stack(rows)  # (B, 2): query row, passage row
        batch = QATrainBatch(
            queries=self.query_tok([self.data.query_texts[q] for q in pairs[:, 0]]),
            passages=self.passage_tok([self.data.passage_texts[p] for p in pairs[:, 1]]),
            query_rows=torch.from_numpy(pairs[:, 0].copy()),
            passage_ids=torch.from_numpy(pairs[:, 1].copy()),
        )
        if self.num_negatives:
            ids = torch.randint(0, self.data.num_passages, (self.num_negatives,))
            batch.negatives = self.passage_tok([self.data.passage_texts[p] for p in ids.tolist()])
            batch.negative_ids = ids
        return batch


class _EvalCollate:
    def __init__(self, data: BEIRData, qrels: Qrels, query_tok: _Tokenize) -> None:
        self.data, self.qrels, self.query_tok = data, qrels, query_tok

    def __call__(self, rows: list[int]) -> QAEvalBatch:
        spans = [(self.qrels.offsets[i], self.qrels.offsets[i + 1]) for i in rows]
        width = max(end - start for start, end in spans)
        relevant = torch.full((len(rows), width), -1, dtype=torch.int64)
        grades = torch.zeros((len(rows), width), dtype=torch.float32)
        for b, (start, end) in enumerate(spans):
            relevant[b, : end - start] = torch.from_numpy(self.qrels.passages[start:end])
            grades[b, : end - start] = torch.from_numpy(self.qrels.grades[start:end])
        query_rows = self.qrels.query_rows[np.asarray(rows)]
        return QAEvalBatch(
            queries=self.query_tok([self.data.query_texts[q] for q in query_rows]),
            query_rows=torch.from_numpy(query_rows.copy()),
            relevant_ids=relevant,
            relevant_grades=grades,
        )


class _PassageCollate:
    def __init__(self, data: BEIRData, passage_tok: _Tokenize) -> None:
        self.data, self.passage_tok = data, passage_tok

    def __call__(self, rows: list[int]) -> PassageBatch:
        return PassageBatch(
            passages=self.passage_tok([self.data.passage_texts[p] for p in rows]),
            passage_ids=torch.as_tensor(rows, dtype=torch.int64),
        )


class QADataModule(PreparedDataModule):
    """Training pairs, evaluation queries with graded qrels, and the passage corpus of a BEIR dataset.

    Args:
        source: dataset source, e.g. :class:`rails.datamodules.beir.BEIRDataset` (``prepare(root) -> Path``).
        tokenizer: Hugging Face tokenizer name or directory (``pkg:<package>/<dir>`` for a model shipped in
            an installed package); use the encoder's own.
        root: cache directory for downloaded datasets (``RAILS_DATA_DIR`` when None).
        query_max_length: question truncation length (tokens, special tokens included).
        passage_max_length: passage truncation length.
        batch_size: global number of training pairs per step (divided by the world size).
        eval_batch_size: questions per evaluation batch (per device).
        corpus_batch_size: passages per corpus-encoding batch.
        num_negatives: R uniform corpus passages added to every training batch (0 = in-batch only).
        train_split: qrels split providing the training pairs.
        val_split: qrels split for validation, or None to hold out ``val_queries_from_train`` training
            questions instead (SciFact has no ``dev`` split).
        val_queries_from_train: questions moved from the training split to validation when ``val_split`` is None.
        test_split: qrels split for testing.
        with_titles: passage text = title + " " + text.
        seed: seed of the validation hold-out.
        num_workers: DataLoader workers.
        pin_memory: pin host memory for GPU transfers.
    """

    def __init__(
        self,
        source: BEIRDataset,
        tokenizer: str,
        root: str | None = None,
        query_max_length: int = 64,
        passage_max_length: int = 256,
        batch_size: int = 64,
        eval_batch_size: int = 128,
        corpus_batch_size: int = 256,
        num_negatives: int = 0,
        train_split: str = "train",
        val_split: str | None = "dev",
        val_queries_from_train: int = 0,
        test_split: str = "test",
        with_titles: bool = True,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(source, root, batch_size)
        for key, value in {
            "query_max_length": query_max_length,
            "passage_max_length": passage_max_length,
            "batch_size": batch_size,
            "eval_batch_size": eval_batch_size,
            "corpus_batch_size": corpus_batch_size,
        }.items():
            if value < 1:
                raise ValueError(f"data.{key} must be >= 1, got {value}")
        if num_negatives < 0 or val_queries_from_train < 0:
            raise ValueError("data.num_negatives and data.val_queries_from_train must be >= 0")
        if val_split is None and val_queries_from_train == 0:
            raise ValueError("data.val_split is null: set data.val_queries_from_train > 0 to validate")
        self.tokenizer_name = tokenizer
        self.query_max_length = query_max_length
        self.passage_max_length = passage_max_length
        self.eval_batch_size = eval_batch_size
        self.corpus_batch_size = corpus_batch_size
        self.num_negatives = num_negatives
        self.train_split = train_split
        self.val_split = val_split
        self.val_queries_from_train = val_queries_from_train
        self.test_split = test_split
        self.with_titles = with_titles
        self.seed = seed
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.data: BEIRData | None = None
        self.splits: dict[str, Qrels] = {}
        self.tokenizer: Any = None

    # ------------------------------------------------------------------------------------------ loading
    def load(self, directory: Path) -> BEIRData:
        """Read the BEIR folder, select the train/val/test qrels and load the tokenizer."""
        from transformers import AutoTokenizer

        data = read_beir(directory, with_titles=self.with_titles)
        train = select_split(data, self.train_split, "train_split")
        if self.val_split is not None:
            val = select_split(data, self.val_split, "val_split")
        else:
            if self.val_queries_from_train >= len(train):
                raise ValueError(
                    f"data.val_queries_from_train={self.val_queries_from_train} leaves no training "
                    f"questions ({len(train)} in split {self.train_split!r})"
                )
            order = np.random.default_rng(self.seed).permutation(len(train))
            held_out = np.zeros(len(train), dtype=bool)
            held_out[order[: self.val_queries_from_train]] = True
            train, val = train.subset(~held_out), train.subset(held_out)
        self.splits = {"train": train, "val": val, "test": select_split(data, self.test_split, "test_split")}
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(self.tokenizer_name))
        return data

    def _require_data(self) -> BEIRData:
        return super()._require_data()

    # ------------------------------------------------------------------------------------------- corpus
    @property
    def num_items(self) -> int:
        """X, the number of passages (item ids are corpus positions 0..X-1)."""
        return self._require_data().num_passages

    def corpus_item_ids(self) -> Tensor:
        """(X,) int64 every passage id, in corpus order."""
        return torch.arange(self.num_items, dtype=torch.int64)

    def query_tokenize(self, texts: Sequence[str]) -> TokenizedText:
        """Tokenise questions exactly as the loaders do (for scripts and demos)."""
        self._require_data()
        return _Tokenize(self.tokenizer, self.query_max_length)(texts)

    def passage_tokenize(self, texts: Sequence[str]) -> TokenizedText:
        """Tokenise passages exactly as the loaders do."""
        self._require_data()
        return _Tokenize(self.tokenizer, self.passage_max_length)(texts)

    def corpus_dataloader(self, batch_size: int | None = None) -> DataLoader:
        """Every passage once, in corpus order, as :class:`PassageBatch` of ``corpus_batch_size`` rows."""
        data = self._require_data()
        return self._loader(
            _Rows(np.arange(data.num_passages)),
            batch_size or self.corpus_batch_size,
            False,
            _PassageCollate(data, _Tokenize(self.tokenizer, self.passage_max_length)),
        )

    # ------------------------------------------------------------------------------------------ loaders
    def _loader(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool,
        collate: Any,
        drop_last: bool = False,
        sampler: Sampler | None = None,
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        data = self._require_data()
        queries, passages = self.splits["train"].pairs()
        collate = _TrainCollate(
            data,
            _Tokenize(self.tokenizer, self.query_max_length),
            _Tokenize(self.tokenizer, self.passage_max_length),
            self.num_negatives,
        )
        pairs = np.stack([queries, passages], axis=1)  # (J, 2)
        # A last batch of one pair has no in-batch negative: drop the ragged tail when there is more than one batch.
        drop_last = len(pairs) > self._per_device_batch_size
        return self._loader(_Rows(pairs), self._per_device_batch_size, True, collate, drop_last)

    def eval_dataloader(self, split: str) -> DataLoader:
        """Questions of ``split`` ("val" or "test") with their graded qrels."""
        data = self._require_data()
        qrels = self.splits[split]
        collate = _EvalCollate(data, qrels, _Tokenize(self.tokenizer, self.query_max_length))
        questions = _Rows(np.arange(len(qrels)))
        # Each question exactly once over all ranks (Lightning's DistributedSampler would pad and repeat some),
        # so distributed metrics equal single-device ones.
        rank, world = (
            (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        )
        sampler = ShardedEvalSampler(questions, num_replicas=world, rank=rank)
        return self._loader(questions, self.eval_batch_size, False, collate, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")
