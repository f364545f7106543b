"""Typed batches that flow from the datamodules to the models, and the shape glossary.

Shape glossary used in every docstring of the package:
    B    queries in a batch (users, questions)
    N    padded history length (``max_seq_len``)
    M    supervised positions in a batch (valid prefixes, flattened)
    D    encoder / query embedding width; D_x item embedding width
    X    items scored per query (corpus size or candidates)
    R    sampled negatives per positive
    P_Q, P_X, d_P   MoL query components, item components, component width
    K    retrieved items per query
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


@dataclass
class SequenceBatch:
    """A padded batch of user histories and the item each history should predict.

    Histories are left-aligned (position 0 = oldest kept item) and zero-padded on the right.

    Attributes:
        user_ids: (B,) int64 raw user ids.
        history_ids: (B, N) int64 item ids, 0 = padding.
        history_timestamps: (B, N) int64 unix seconds, 0 at padding.
        history_ratings: (B, N) float32 ratings, 0 at padding.
        lengths: (B,) int64 number of valid history positions (>= 1).
        target_ids: (B,) int64 the held-out next item.
        target_timestamps: (B,) int64 its timestamp.
        target_ratings: (B,) float32 its rating.
    """

    user_ids: Tensor
    history_ids: Tensor
    history_timestamps: Tensor
    history_ratings: Tensor
    lengths: Tensor
    target_ids: Tensor
    target_timestamps: Tensor
    target_ratings: Tensor

    def to(self, device: torch.device | str) -> SequenceBatch:
        """Return a copy with every tensor moved to ``device``."""
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def __len__(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def valid_mask(self) -> Tensor:
        """(B, N) bool, True at valid history positions."""
        positions = torch.arange(self.history_ids.shape[1], device=self.history_ids.device)
        return positions[None, :] < self.lengths[:, None]

    def next_ids(self) -> Tensor:
        """(B, N) int64 id each position must predict: the next history item, the target at L-1, 0 beyond."""
        shifted = torch.nn.functional.pad(self.history_ids[:, 1:], (0, 1))
        shifted = shifted.masked_fill(~self.valid_mask, 0)
        rows = torch.arange(len(self), device=shifted.device)
        shifted[rows, self.lengths - 1] = self.target_ids
        return shifted

    def next_timestamps(self) -> Tensor:
        """(B, N) int64 timestamp of the item each position predicts (target's at L-1, 0 beyond)."""
        shifted = torch.nn.functional.pad(self.history_timestamps[:, 1:], (0, 1))
        shifted = shifted.masked_fill(~self.valid_mask, 0)
        rows = torch.arange(len(self), device=shifted.device)
        shifted[rows, self.lengths - 1] = self.target_timestamps
        return shifted


def collate_sequences(rows: list[dict[str, Tensor]]) -> SequenceBatch:
    """Stack per-user example dicts (as produced by the sequence datasets) into a SequenceBatch."""
    return SequenceBatch(
        **{f.name: torch.stack([row[f.name] for row in rows]) for f in fields(SequenceBatch)}
    )
