"""Leave-last-out examples over canonical sequences (spec §5.3).

For a user with chronological items ``s_0 .. s_{n-1}`` and ``holdout`` h (1 = the paper's protocol):

- ``train``: target ``s_{n-1-h}``; history = the up-to-``max_seq_len`` items before it. The model
  supervises every prefix of that history (next-item prediction), so all of ``s_1 .. s_{n-1-h}`` are
  training targets and nothing after them is ever seen in training.
- ``val``: target ``s_{n-h}`` (with h = 1 this is the test target, as in the paper, which has no
  separate validation split; with h = 2 it is the second-to-last item, a true validation split).
- ``test``: target ``s_{n-1}``; history = the up-to-``max_seq_len`` items before it.

Histories keep the most recent ``max_seq_len`` items, left-aligned and zero-padded.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from rails.datamodules.canonical import CanonicalData

Split = Literal["train", "val", "test"]


def target_positions(lengths: np.ndarray, split: Split, holdout: int) -> np.ndarray:
    """(U,) index within each user's sequence of that split's target (may be < 1 for too-short users)."""
    if holdout not in (1, 2):
        raise ValueError(f"holdout must be 1 (paper protocol) or 2 (separate validation item), got {holdout}")
    if split == "train":
        return lengths - 1 - holdout
    if split == "val":
        return lengths - holdout
    if split == "test":
        return lengths - 1
    raise ValueError(f"unknown split {split!r}; expected 'train', 'val' or 'test'")


class SequenceExamples(Dataset):
    """One example per user for one split; users whose target would have no history are skipped.

    Args:
        data: canonical sequences.
        split: which target to hold out.
        max_seq_len: N, history window length.
        holdout: 1 (paper) or 2 (strict validation split).
        prefixes: ``train`` only: one example per training target instead of one per user (every prefix
            ``s_0 .. s_{t-1}`` -> ``s_t`` for t = 1 .. the user's last training target, as the S3-Rec-family
            code trains); what an encoder that is not causal needs, since it may only be supervised at
            its last position.
    """

    def __init__(
        self, data: CanonicalData, split: Split, max_seq_len: int, holdout: int = 1, prefixes: bool = False
    ) -> None:
        if max_seq_len < 1:
            raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
        if prefixes and split != "train":
            raise ValueError(f"prefix examples are for the train split, got split={split!r}")
        self.data = data
        self.split = split
        self.max_seq_len = max_seq_len
        targets = target_positions(data.lengths(), split, holdout)
        self.users = np.nonzero(targets >= 1)[0]
        self.targets = targets[self.users]
        if prefixes:  # (user, t) for t = 1 .. last target, user-major, t ascending
            counts = self.targets
            self.users = np.repeat(self.users, counts)
            starts = np.repeat(np.cumsum(counts) - counts, counts)
            self.targets = np.arange(int(counts.sum()), dtype=np.int64) - starts + 1

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {name: value[0] for name, value in self.rows([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        """A whole batch at once (the DataLoader's batched fetch): one gather instead of one example per user;
        ``collate_sequences`` takes the stacked fields as they are."""
        return self.rows(indices)

    def rows(self, indices: list[int] | np.ndarray) -> dict[str, Tensor]:
        """Examples ``indices`` stacked: history fields (B, N) left-aligned and zero-padded, the others (B,)."""
        index = np.asarray(indices, dtype=np.int64)
        users = self.users[index]
        starts = self.data.offsets[users]
        targets = starts + self.targets[index]
        firsts = np.maximum(starts, targets - self.max_seq_len)
        lengths = targets - firsts
        columns = np.arange(self.max_seq_len)
        kept = columns[None, :] < lengths[:, None]  # (B, N)
        positions = np.where(kept, firsts[:, None] + columns[None, :], 0)

        def history(values: np.ndarray, dtype: torch.dtype) -> Tensor:
            return torch.from_numpy(np.where(kept, values[positions], 0)).to(dtype)

        def at_target(values: np.ndarray, dtype: torch.dtype) -> Tensor:
            return torch.from_numpy(np.asarray(values[targets])).to(dtype)

        return {
            "user_ids": torch.from_numpy(np.asarray(self.data.user_ids[users])).to(torch.int64),
            "history_ids": history(self.data.item_ids, torch.int64),
            "history_timestamps": history(self.data.timestamps, torch.int64),
            "history_ratings": history(self.data.ratings, torch.float32),
            "lengths": torch.from_numpy(lengths).to(torch.int64),
            "target_ids": at_target(self.data.item_ids, torch.int64),
            "target_timestamps": at_target(self.data.timestamps, torch.int64),
            "target_ratings": at_target(self.data.ratings, torch.float32),
        }


def training_item_counts(data: CanonicalData, holdout: int) -> np.ndarray:
    """(max_item_id + 1,) int64 interaction counts over the items a model may train on (popularity baseline)."""
    lengths = data.lengths()
    last_train = target_positions(lengths, "train", holdout)
    keep = np.arange(len(data.item_ids)) - np.repeat(data.offsets[:-1], lengths) <= np.repeat(
        last_train, lengths
    )
    return np.bincount(data.item_ids[keep], minlength=data.max_item_id + 1).astype(np.int64)
