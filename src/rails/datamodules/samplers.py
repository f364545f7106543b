"""Samplers and a resumable DataLoader for exact multi-process evaluation and mid-epoch resume.

- :class:`ShardedEvalSampler`: rank ``r`` of ``W`` gets indices ``r, r + W, r + 2W, ...``: every example
  exactly once over all ranks, no padding (Lightning's ``DistributedSampler`` pads by repeating examples,
  which changes HR/NDCG with the number of devices).
- :class:`ResumableRandomSampler`: a seeded, epoch-keyed shuffle (padded to a multiple of the world size, as
  for training) that can start an epoch at an arbitrary example offset.
- :class:`ResumableDataLoader`: counts the batches it handed out in the current epoch and exposes them via
  ``state_dict`` / ``load_state_dict``; Lightning stores that state in checkpoints (``combined_loader``)
  and restores it before iterating, so a run resumed from a mid-epoch checkpoint continues with the next
  unseen batch.

Both samplers subclass ``DistributedSampler`` so that Lightning keeps them as they are instead of wrapping
the loader in its own padding sampler (whatever ``Trainer(use_distributed_sampler=...)`` says).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler


def _check_rank(num_replicas: int, rank: int) -> None:
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"invalid rank {rank} for world size {num_replicas}")


class ShardedEvalSampler(DistributedSampler):
    """In-order, non-padding shard of a dataset: every index appears on exactly one rank.

    Args:
        dataset: any sized dataset.
        num_replicas: world size W.
        rank: this process's global rank.
    """

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0) -> None:
        _check_rank(num_replicas, rank)
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)  # type: ignore[arg-type]
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


class ResumableRandomSampler(DistributedSampler):
    """Seeded per-epoch shuffle, sharded over ranks, that can resume mid-epoch.

    The permutation of epoch ``e`` depends only on ``(seed, e)``, so a restarted process reproduces it.
    Like ``DistributedSampler(drop_last=False)`` the permutation is padded with its first indices to a
    multiple of the world size (training only; use :class:`ShardedEvalSampler` for evaluation).

    Args:
        dataset: any sized dataset.
        num_replicas: world size W.
        rank: this process's global rank.
        seed: shuffle seed (must be equal on every rank).
        shuffle: shuffle (True) or keep the dataset order.
    """

    def __init__(
        self, dataset: Sized, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True
    ) -> None:
        _check_rank(num_replicas, rank)
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)  # type: ignore[arg-type]
        self.start_index = 0  # examples of the current epoch (on this rank) to skip once

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's permutation; moving to another epoch drops a pending resume offset."""
        if epoch != self.epoch:
            self.start_index = 0
        self.epoch = epoch

    def resume_at(self, epoch: int, start_index: int) -> None:
        """Make the next iteration start at example ``start_index`` of ``epoch``'s shard."""
        if not 0 <= start_index <= self.num_samples:
            raise ValueError(f"resume offset {start_index} outside the shard of {self.num_samples} examples")
        self.epoch = epoch
        self.start_index = start_index

    def _indices(self) -> list[int]:
        n = len(self.dataset)  # type: ignore[arg-type]
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            indices = torch.randperm(n, generator=generator).tolist()
        else:
            indices = list(range(n))
        padding = self.total_size - n
        if padding > 0:
            indices += (indices * math.ceil(padding / max(n, 1)))[:padding]
        return indices[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        start, self.start_index = self.start_index, 0
        return iter(self._indices()[start:])

    def __len__(self) -> int:
        return self.num_samples


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ResumableRandomSampler` whose position survives checkpoints.

    ``state_dict()`` -> ``{"epoch", "seed", "batches"}``: batches handed out so far in the current epoch.
    Lightning does not prefetch from sized loaders, so at ``on_train_batch_end`` this equals the number of
    batches trained on in the epoch. ``load_state_dict`` adopts the stored shuffle seed and makes the next
    iteration skip those batches.
    """

    def __init__(self, dataset: Any, sampler: ResumableRandomSampler, batch_size: int, **kwargs: Any) -> None:
        if not isinstance(sampler, ResumableRandomSampler):
            raise TypeError("ResumableDataLoader needs a ResumableRandomSampler")
        if kwargs.get("drop_last"):
            raise ValueError("ResumableDataLoader does not support drop_last=True")
        super().__init__(dataset, sampler=sampler, batch_size=batch_size, **kwargs)
        self._batches = 0
        self._epoch = sampler.epoch

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        sampler: ResumableRandomSampler = self.sampler  # type: ignore[assignment]
        skipped = sampler.start_index // self.batch_size  # type: ignore[operator]
        self._epoch = sampler.epoch
        self._batches = skipped
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        sampler: ResumableRandomSampler = self.sampler  # type: ignore[assignment]
        return {"epoch": self._epoch, "seed": sampler.seed, "batches": self._batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler: ResumableRandomSampler = self.sampler  # type: ignore[assignment]
        sampler.seed = int(state["seed"])  # the interrupted run's shuffle (also when `seed` was null)
        batches = int(state["batches"])
        sampler.resume_at(int(state["epoch"]), min(batches * self.batch_size, sampler.num_samples))  # type: ignore[operator]
        self._epoch = int(state["epoch"])
        self._batches = batches


def per_device_batch_size(batch_size: int, trainer: object | None) -> int:
    """Global ``data.batch_size`` divided by the trainer's world size (1 without a trainer); must divide evenly."""
    world_size = getattr(trainer, "world_size", 1) if trainer is not None else 1
    if batch_size % world_size != 0:
        raise ValueError(f"data.batch_size={batch_size} is not divisible by the world size {world_size}")
    return batch_size // world_size
