"""Typed batches that flow from the datamodules to the models, and the shape glossary.

Sequential recommendation: :class:`SequenceBatch`. Question answering: :class:`TokenizedText`,
:class:`QATrainBatch`, :class:`QAEvalBatch`, :class:`PassageBatch`. Every batch moves with ``to(device)``.

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

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import TypeVar

import torch
from torch import Tensor

_Batch = TypeVar("_Batch", bound="_Movable")


class _Movable:
    """``to(device)`` for dataclasses of tensors (nested movables and None fields included); Lightning calls it."""

    def to(self: _Batch, device: torch.device | str) -> _Batch:
        """Return a copy with every tensor (and nested batch) moved to ``device``."""
        moved = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            moved[f.name] = value.to(device) if value is not None else None
        return replace(self, **moved)  # type: ignore[type-var]


@dataclass
class SequenceBatch(_Movable):
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

    def __len__(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def valid_mask(self) -> Tensor:
        """(B, N) bool, True at valid history positions."""
        positions = torch.arange(self.history_ids.shape[1], device=self.history_ids.device)
        return positions[None, :] < self.lengths[:, None]

    def _next(self, history: Tensor, target: Tensor) -> Tensor:
        """(B, N) ``history`` shifted left by one, ``target`` at position L-1, 0 beyond."""
        shifted = torch.nn.functional.pad(history[:, 1:], (0, 1))
        shifted = shifted.masked_fill(~self.valid_mask, 0)
        shifted[torch.arange(len(self), device=shifted.device), self.lengths - 1] = target
        return shifted

    def next_ids(self) -> Tensor:
        """(B, N) int64 id each position must predict: the next history item, the target at L-1, 0 beyond."""
        return self._next(self.history_ids, self.target_ids)

    def next_timestamps(self) -> Tensor:
        """(B, N) int64 timestamp of the item each position predicts (target's at L-1, 0 beyond)."""
        return self._next(self.history_timestamps, self.target_timestamps)


def collate_sequences(rows: list[dict[str, Tensor]] | Mapping[str, Tensor]) -> SequenceBatch:
    """Stack per-user example dicts (as produced by the sequence datasets) into a SequenceBatch.

    ``rows`` may also be one mapping of already stacked fields (a dataset's batched ``__getitems__``).
    """
    if isinstance(rows, Mapping):
        return SequenceBatch(**{f.name: rows[f.name] for f in fields(SequenceBatch)})
    return SequenceBatch(
        **{f.name: torch.stack([row[f.name] for row in rows]) for f in fields(SequenceBatch)}
    )


@dataclass
class TokenizedText(_Movable):
    """Right-padded token ids. Attributes: input_ids (B, L) int64, attention_mask (B, L) int64 (1 = token)."""

    input_ids: Tensor
    attention_mask: Tensor

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class QATrainBatch(_Movable):
    """B (question, relevant passage) pairs and R shared random corpus negatives.

    Attributes:
        queries: (B, L_q) tokens.
        passages: (B, L_x) tokens of each row's relevant passage.
        query_rows: (B,) int64 query row (two rows with the same query share their positives).
        passage_ids: (B,) int64 corpus position of each positive.
        negatives: (R, L_x) tokens of uniformly drawn passages, or None.
        negative_ids: (R,) int64 their corpus positions, or None.
    """

    queries: TokenizedText
    passages: TokenizedText
    query_rows: Tensor
    passage_ids: Tensor
    negatives: TokenizedText | None = None
    negative_ids: Tensor | None = None

    def __len__(self) -> int:
        return len(self.queries)


@dataclass
class QAEvalBatch(_Movable):
    """B questions and their graded relevant passages.

    Attributes:
        queries: (B, L_q) tokens.
        query_rows: (B,) int64.
        relevant_ids: (B, J) int64 corpus positions of the relevant passages, -1 = padding.
        relevant_grades: (B, J) float32 grades (> 0), 0 at padding.
    """

    queries: TokenizedText
    query_rows: Tensor
    relevant_ids: Tensor
    relevant_grades: Tensor

    def __len__(self) -> int:
        return len(self.queries)


@dataclass
class PassageBatch(_Movable):
    """Passages of the corpus. Attributes: passages (B, L_x) tokens, passage_ids (B,) int64 positions."""

    passages: TokenizedText
    passage_ids: Tensor

    def __len__(self) -> int:
        return len(self.passages)
