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
    """

    def __init__(self, data: CanonicalData, split: Split, max_seq_len: int, holdout: int = 1) -> None:
        if max_seq_len < 1:
            raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
        self.data = data
        self.split = split
        self.max_seq_len = max_seq_len
        targets = target_positions(data.lengths(), split, holdout)
        self.users = np.nonzero(targets >= 1)[0]
        self.targets = targets[self.users]

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        user = self.users[index]
        start = self.data.offsets[user]
        target = start + self.targets[index]
        first = max(start, target - self.max_seq_len)
        length = target - first
        n = self.max_seq_len

        def padded(values: np.ndarray, dtype: torch.dtype) -> Tensor:
            out = torch.zeros(n, dtype=dtype)
            out[:length] = torch.from_numpy(values[first:target])
            return out

        return {
            "user_ids": torch.tensor(self.data.user_ids[user], dtype=torch.int64),
            "history_ids": padded(self.data.item_ids, torch.int64),
            "history_timestamps": padded(self.data.timestamps, torch.int64),
            "history_ratings": padded(self.data.ratings, torch.float32),
            "lengths": torch.tensor(length, dtype=torch.int64),
            "target_ids": torch.tensor(self.data.item_ids[target], dtype=torch.int64),
            "target_timestamps": torch.tensor(self.data.timestamps[target], dtype=torch.int64),
            "target_ratings": torch.tensor(self.data.ratings[target], dtype=torch.float32),
        }


def training_item_counts(data: CanonicalData, holdout: int) -> np.ndarray:
    """(max_item_id + 1,) int64 interaction counts over the items a model may train on (popularity baseline)."""
    lengths = data.lengths()
    last_train = target_positions(lengths, "train", holdout)
    keep = np.arange(len(data.item_ids)) - np.repeat(data.offsets[:-1], lengths) <= np.repeat(
        last_train, lengths
    )
    return np.bincount(data.item_ids[keep], minlength=data.max_item_id + 1).astype(np.int64)
