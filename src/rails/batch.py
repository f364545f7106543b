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
from dataclasses import MISSING, dataclass, fields, replace
from typing import TypeVar

import torch
from torch import Tensor

_Batch = TypeVar("_Batch", bound="_Movable")


class _Movable:
    """``to(device)`` for dataclasses of tensors (nested movables; None and plain values kept); Lightning calls it."""

    def to(self: _Batch, device: torch.device | str) -> _Batch:
        """Return a copy with every tensor (and nested batch) moved to ``device``."""
        moved = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            moved[f.name] = value.to(device) if isinstance(value, Tensor | _Movable) else value
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
        supervised_count: how many positions predict a real item (:meth:`supervised_positions`), taken
            when the batch is built on the CPU (no device synchronisation) and kept by ``to(device)``; None
            for a batch built on a device.
        last_supervised_count: the same for each row's last position only.
    """

    user_ids: Tensor
    history_ids: Tensor
    history_timestamps: Tensor
    history_ratings: Tensor
    lengths: Tensor
    target_ids: Tensor
    target_timestamps: Tensor
    target_ratings: Tensor
    supervised_count: int | None = None
    last_supervised_count: int | None = None

    def __post_init__(self) -> None:
        if self.lengths.device.type == "cpu":  # recounted whenever built on the CPU: never stale there
            next_ids = self.next_ids()
            self.supervised_count = int(self.supervised_mask(next_ids=next_ids).sum())
            self.last_supervised_count = int(self.supervised_mask(True, next_ids).sum())

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

    def supervised_mask(self, last_only: bool = False, next_ids: Tensor | None = None) -> Tensor:
        """(B, N) bool: the valid positions whose next id is not padding (``last_only``: each row's last).

        ``next_ids``: :meth:`next_ids`, when the caller already has it.
        """
        next_ids = self.next_ids() if next_ids is None else next_ids
        mask = self.valid_mask & (next_ids != 0)
        if last_only:
            columns = torch.arange(mask.shape[1], device=mask.device)
            mask = mask & (columns[None, :] == self.lengths[:, None] - 1)
        return mask

    def supervised_positions(self, last_only: bool = False, next_ids: Tensor | None = None) -> Tensor:
        """(M,) int64 row-major indices into the flattened (B, N) positions of :meth:`supervised_mask`.

        With the count taken on the CPU (``supervised_count``), no device-to-host synchronisation: each
        selected position is scattered to its rank among the selected (a cumulative sum), the others to one
        spare slot; without it, ``nonzero`` (one synchronisation).
        """
        flat = self.supervised_mask(last_only, next_ids).flatten()
        count = self.last_supervised_count if last_only else self.supervised_count
        if count is None:
            return flat.nonzero().squeeze(1)
        slot = torch.where(flat, flat.cumsum(0) - 1, count)
        index = torch.empty(count + 1, dtype=torch.int64, device=flat.device)
        index.scatter_(0, slot, torch.arange(flat.numel(), device=flat.device))
        return index[:count]


def collate_sequences(rows: list[dict[str, Tensor]] | Mapping[str, Tensor]) -> SequenceBatch:
    """Stack per-user example dicts (as produced by the sequence datasets) into a SequenceBatch.

    ``rows`` may also be one mapping of already stacked fields (a dataset's batched ``__getitems__``).
    """
    names = [f.name for f in fields(SequenceBatch) if f.default is MISSING]  # the tensors; counts derived
    if isinstance(rows, Mapping):
        return SequenceBatch(**{name: rows[name] for name in names})
    return SequenceBatch(**{name: torch.stack([row[name] for row in rows]) for name in names})


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
