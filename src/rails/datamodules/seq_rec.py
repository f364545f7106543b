"""SequentialDataModule: leave-last-out loaders over any canonical dataset, plus the item corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from rails.batch import collate_sequences
from rails.datamodules.canonical import CanonicalData, DatasetSource, read_canonical
from rails.datamodules.prepared import PreparedDataModule
from rails.datamodules.samplers import (
    ResumableDataLoader,
    ResumableRandomSampler,
    ShardedEvalSampler,
)
from rails.datamodules.sequences import SequenceExamples, training_item_counts


class SequentialDataModule(PreparedDataModule):
    """Train/val/test loaders of :class:`rails.batch.SequenceBatch` and the candidate corpus.

    Args:
        source: produces the canonical dataset directory (synthetic generator, MovieLens, Amazon...).
        root: directory under which ``source`` caches prepared data (``RAILS_DATA_DIR`` overrides when set
            and ``root`` is None).
        max_seq_len: N, history window (200 for MovieLens, 50 for Amazon Books in the paper).
        batch_size: global training batch size; divided by the world size in ``setup``.
        eval_batch_size: users per evaluation batch (per device).
        holdout: 1 = paper protocol (val target = test target), 2 = separate validation item.
        timestamps: ``data`` = the prepared timestamps; ``positions`` = each user's positions 0..n-1 instead
            (an ablation: what a time-aware encoder such as HSTU sees on data without timestamps).
        num_workers: DataLoader workers.
        pin_memory: pin host memory for GPU transfers.
        train_examples: ``users`` (one training example per user, every position supervised) or
            ``prefixes`` (one per training target: what a non-causal encoder, supervised at its last
            position only, needs; see :class:`~rails.datamodules.sequences.SequenceExamples`).
    """

    def __init__(
        self,
        source: DatasetSource,
        root: str | None = None,
        max_seq_len: int = 200,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        holdout: int = 1,
        timestamps: str = "data",
        num_workers: int = 0,
        pin_memory: bool = False,
        train_examples: str = "users",
    ) -> None:
        super().__init__(source, root, batch_size)
        if train_examples not in ("users", "prefixes"):
            raise ValueError(f"data.train_examples must be 'users' or 'prefixes', got {train_examples!r}")
        self.train_examples = train_examples
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError(
                f"data.batch_size and data.eval_batch_size must be >= 1, got {batch_size}, {eval_batch_size}"
            )
        if holdout not in (1, 2):
            raise ValueError(f"data.holdout must be 1 or 2, got {holdout}")
        if timestamps not in ("data", "positions"):
            raise ValueError(f"data.timestamps must be 'data' or 'positions', got {timestamps!r}")
        self.timestamps = timestamps
        self.max_seq_len = max_seq_len
        self.eval_batch_size = eval_batch_size
        self.holdout = holdout
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.data: CanonicalData | None = None

    def load(self, directory: Path) -> CanonicalData:
        data = read_canonical(directory)
        if self.timestamps == "positions":
            lengths = data.lengths()
            data.timestamps = np.arange(len(data.item_ids), dtype=np.int64) - np.repeat(
                data.offsets[:-1], lengths
            )
        return data

    def _require_data(self) -> CanonicalData:
        return super()._require_data()

    @property
    def num_items(self) -> int:
        """Rows of the item embedding table: max item id + 1 (row 0 is padding)."""
        return self._require_data().max_item_id + 1

    def corpus_item_ids(self) -> Tensor:
        """(X,) int64 every candidate item id (the evaluation corpus and the negative pool)."""
        return torch.from_numpy(self._require_data().corpus_item_ids.copy())

    def corpus_dataloader(self, batch_size: int = 65536) -> DataLoader:
        """Batches of candidate item ids, (<= batch_size,) int64 each, covering the corpus once in order."""
        return DataLoader(self.corpus_item_ids(), batch_size=batch_size, shuffle=False)

    def item_popularity(self) -> Tensor:
        """(num_items,) int64 training-interaction counts per item id (for the popularity baseline)."""
        return torch.from_numpy(training_item_counts(self._require_data(), self.holdout))

    def dataset(self, split: str) -> SequenceExamples:
        prefixes = split == "train" and self.train_examples == "prefixes"
        return SequenceExamples(self._require_data(), split, self.max_seq_len, self.holdout, prefixes)  # type: ignore[arg-type]

    def _world(self) -> tuple[int, int]:
        """(global rank, world size) of the attached trainer, (0, 1) without one."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _shuffle_seed(self) -> int:
        """Training shuffle seed: the process seed (``seed_everything``), rank zero's value on every rank."""
        seed = torch.initial_seed() % (2**31)
        if self.trainer is not None and self.trainer.world_size > 1:
            seed = int(self.trainer.strategy.broadcast(seed, src=0))
        return seed

    def _loader(self, split: str, batch_size: int, sampler: Sampler, **kwargs: object) -> DataLoader:
        loader_cls = ResumableDataLoader if isinstance(sampler, ResumableRandomSampler) else DataLoader
        return loader_cls(
            self.dataset(split),
            sampler=sampler,
            batch_size=batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=collate_sequences,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled, sharded over ranks, resumable mid-epoch (its position is stored in checkpoints)."""
        rank, world = self._world()
        seed = self._shuffle_seed()
        sampler = ResumableRandomSampler(self.dataset("train"), num_replicas=world, rank=rank, seed=seed)
        # A private generator for worker base seeds: iterating never draws from the global RNG.
        generator = torch.Generator().manual_seed(seed)
        return self._loader("train", self._per_device_batch_size, sampler, generator=generator)

    def _eval_loader(self, split: str) -> DataLoader:
        rank, world = self._world()
        sampler = ShardedEvalSampler(self.dataset(split), num_replicas=world, rank=rank)
        return self._loader(split, self.eval_batch_size, sampler)

    def val_dataloader(self) -> DataLoader:
        """Each validation user exactly once over all ranks (no padding), so metrics match one device."""
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        """Each test user exactly once over all ranks (no padding), so metrics match one device."""
        return self._eval_loader("test")
