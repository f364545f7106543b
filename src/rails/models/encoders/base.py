"""The sequence-encoder contract and the pieces every sequential encoder shares (spec §4.1, §4.2).

An encoder sees the (B, N, D) history embeddings and a :class:`SequenceHistory` (lengths, timestamps and
next-position timestamps), never the batch's targets.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn

from rails.batch import SequenceBatch
from rails.checks import require, require_at_least, require_probability

OutputNorm = Literal["l2", "layer_norm", "none"]
OUTPUT_NORMS: tuple[OutputNorm, ...] = ("l2", "layer_norm", "none")


def truncated_normal_(tensor: Tensor, std: float) -> Tensor:
    """In-place N(0, std^2) truncated to (-2 std, 2 std)."""
    with torch.no_grad():
        return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)


class OutputNormalization(nn.Module):
    """Encoder output post-processing: "l2" (dot-product heads), "layer_norm" (MoL heads) or "none".

    Args:
        dim: D.
        kind: the normalisation, or None to let the similarity head choose (``RetrievalModule`` calls
            :meth:`prefer` with the head's ``query_norm``); until then (an encoder used on its own) "l2".
        eps: epsilon of both normalisations.
    """

    def __init__(self, dim: int, kind: OutputNorm | None = None, eps: float = 1e-6) -> None:
        super().__init__()
        if kind is not None and kind not in OUTPUT_NORMS:
            raise ValueError(f"output_norm must be one of {OUTPUT_NORMS} or None, got {kind!r}")
        self.explicit = kind is not None
        self.kind: OutputNorm = kind if kind is not None else "l2"
        self.eps = eps
        self.dim = dim

    def prefer(self, kind: OutputNorm) -> None:
        """Use ``kind`` unless a normalisation was given explicitly (how a head chooses its query norm)."""
        if kind not in OUTPUT_NORMS:
            raise ValueError(f"query_norm must be one of {OUTPUT_NORMS}, got {kind!r}")
        if not self.explicit:
            self.kind = kind

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "l2":
            return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(self.eps)
        if self.kind == "layer_norm":
            return nn.functional.layer_norm(x, (self.dim,), eps=self.eps)
        return x

    def extra_repr(self) -> str:
        return self.kind


PositionAlignment = Literal["left", "right"]
POSITION_ALIGNMENTS: tuple[str, ...] = ("left", "right")


class PositionalInput(nn.Module):
    """x_n = e(id_n) * sqrt(D) + P[pos_n], dropout, zero at padding (spec §4.1).

    Args:
        dim: D.
        max_seq_len: N.
        dropout: input dropout rate.
        alignment: "left" (spec §4.1, the RAILS / HSTU code): positions counted from the oldest kept item
            (pos_n = n); "right": from the newest, as in the left-padded SASRec / S3-Rec code
            (pos_n = N - length + n, so the newest item is always at N - 1 and a position says how recent
            an item is rather than how far into the history).
    """

    def __init__(
        self, dim: int, max_seq_len: int, dropout: float, alignment: PositionAlignment = "left"
    ) -> None:
        super().__init__()
        if alignment not in POSITION_ALIGNMENTS:
            raise ValueError(f"position alignment must be one of {POSITION_ALIGNMENTS}, got {alignment!r}")
        self.dim = dim
        self.alignment = alignment
        self.positions = nn.Embedding(max_seq_len, dim)
        truncated_normal_(self.positions.weight, math.sqrt(1.0 / dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, item_embeddings: Tensor, valid_mask: Tensor) -> Tensor:
        """(B, N, D) embeddings, (B, N) bool mask (left-aligned histories) -> (B, N, D)."""
        n = item_embeddings.shape[1]
        table = self.positions.num_embeddings
        if n > table:
            raise ValueError(f"sequence length {n} exceeds the encoder's max_seq_len {table}")
        if self.alignment == "left":
            positions = self.positions.weight[:n]
        else:  # (B, N): the newest valid item at table - 1; padding clamped (zeroed below)
            shift = table - valid_mask.sum(dim=1, keepdim=True)
            index = (torch.arange(n, device=valid_mask.device)[None, :] + shift).clamp(max=table - 1)
            positions = self.positions(index)
        x = item_embeddings * math.sqrt(self.dim) + positions
        return self.dropout(x) * valid_mask[..., None].to(x.dtype)


@dataclass(frozen=True)
class SequenceHistory:
    """What a sequence encoder sees of a batch besides the item embeddings (never the target ids).

    Attributes:
        lengths: (B,) int64 number of valid history positions (>= 1); histories are left-aligned.
        timestamps: (B, N) int64 unix seconds of the history items, 0 at padding.
        next_timestamps: (B, N) int64 timestamp of the item each position predicts (the target's at
            ``lengths - 1``, 0 beyond), for HSTU's relative time bias.
    """

    lengths: Tensor
    timestamps: Tensor
    next_timestamps: Tensor

    @classmethod
    def of(cls, batch: SequenceBatch) -> SequenceHistory:
        """The history part of a :class:`~rails.batch.SequenceBatch`."""
        return cls(batch.lengths, batch.history_timestamps, batch.next_timestamps())

    @property
    def valid_mask(self) -> Tensor:
        """(B, N) bool, True at valid history positions."""
        positions = torch.arange(self.timestamps.shape[1], device=self.timestamps.device)
        return positions[None, :] < self.lengths[:, None]

    def to(self, device: torch.device | str) -> SequenceHistory:
        """A copy with every tensor moved to ``device``."""
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})


class SequenceEncoder(nn.Module, ABC):
    """Contract: ``forward(history_embeddings (B, N, D), history) -> (B, N, D)`` per-position query embeddings.

    Output position i summarises history positions 0..i and is trained to predict the next item (the
    history item at i + 1, the target at ``lengths - 1``); outputs at padded positions are arbitrary and never
    used. Encoders are padding-invariant and, unless ``causal`` is False, causal (output i does not depend on
    positions > i). A non-causal encoder (e.g. a frequency filter over the whole history) is trained on its
    last position only: the retrieval module supervises ``lengths - 1`` alone, and ``data.train_examples=
    prefixes`` gives it one example per training target. ``dim`` is the output width; ``output_norm`` the
    final normalisation (whose kind the similarity head chooses unless it was given explicitly).
    """

    dim: int
    output_norm: OutputNormalization
    causal: bool = True

    def prefer_output_norm(self, kind: OutputNorm) -> None:
        """Adopt the similarity head's ``query_norm`` unless ``output_norm`` was set explicitly."""
        self.output_norm.prefer(kind)

    @abstractmethod
    def forward(self, history_embeddings: Tensor, history: SequenceHistory) -> Tensor:
        """(B, N, D) embeddings of the history items -> (B, N, D)."""


def check_encoder_args(args: Mapping[str, Any]) -> None:
    """Argument rules every sequence encoder shares: ``dim``, ``max_seq_len``, ``num_blocks``, ``num_heads``
    >= 1, ``dropout`` in [0, 1), ``output_norm`` one of :data:`OUTPUT_NORMS` or None, ``position_alignment``
    (where an encoder has it) one of :data:`POSITION_ALIGNMENTS`."""
    require_at_least(args, 1, "dim", "max_seq_len", "num_blocks", "num_heads")
    require_probability(args, "dropout")
    norm = args["output_norm"]
    require(
        norm is None or norm in OUTPUT_NORMS, "output_norm", norm, f"must be one of {OUTPUT_NORMS} or null"
    )
    align = args.get("position_alignment", "left")
    require(
        align in POSITION_ALIGNMENTS, "position_alignment", align, f"must be one of {POSITION_ALIGNMENTS}"
    )


def xavier_normal_except(module: nn.Module, skip: tuple[str, ...]) -> None:
    """Re-initialise every >= 2-D parameter whose name contains none of ``skip`` with xavier_normal_ (spec §1.9)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.dim() >= 2 and not any(s in name for s in skip):
                nn.init.xavier_normal_(param)
