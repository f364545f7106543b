"""The sequence-encoder contract and the pieces every sequential encoder shares (spec §4.1, §4.2)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Literal

import torch
from torch import Tensor, nn

from rails.batch import SequenceBatch

OutputNorm = Literal["l2", "layer_norm", "none"]


def truncated_normal_(tensor: Tensor, std: float) -> Tensor:
    """In-place N(0, std^2) truncated to (-2 std, 2 std)."""
    with torch.no_grad():
        return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)


class OutputNormalization(nn.Module):
    """Encoder output post-processing: "l2" (dot-product runs), "layer_norm" (MoL runs), or "none"."""

    def __init__(self, dim: int, kind: OutputNorm = "l2", eps: float = 1e-6) -> None:
        super().__init__()
        if kind not in ("l2", "layer_norm", "none"):
            raise ValueError(f"output_norm must be 'l2', 'layer_norm' or 'none', got {kind!r}")
        self.kind = kind
        self.eps = eps
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "l2":
            return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(self.eps)
        if self.kind == "layer_norm":
            return nn.functional.layer_norm(x, (self.dim,), eps=self.eps)
        return x

    def extra_repr(self) -> str:
        return self.kind


class PositionalInput(nn.Module):
    """x_n = e(id_n) * sqrt(D) + P[n], dropout, zero at padding (spec §4.1).

    Args:
        dim: D.
        max_seq_len: N; positions are counted from the left (oldest kept item = 0).
        dropout: input dropout rate.
    """

    def __init__(self, dim: int, max_seq_len: int, dropout: float) -> None:
        super().__init__()
        self.dim = dim
        self.positions = nn.Embedding(max_seq_len, dim)
        truncated_normal_(self.positions.weight, math.sqrt(1.0 / dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, item_embeddings: Tensor, valid_mask: Tensor) -> Tensor:
        """(B, N, D) embeddings, (B, N) bool mask -> (B, N, D)."""
        n = item_embeddings.shape[1]
        if n > self.positions.num_embeddings:
            raise ValueError(
                f"sequence length {n} exceeds the encoder's max_seq_len {self.positions.num_embeddings}"
            )
        x = item_embeddings * math.sqrt(self.dim) + self.positions.weight[:n]
        return self.dropout(x) * valid_mask[..., None].to(x.dtype)


class SequenceEncoder(nn.Module, ABC):
    """Contract: ``forward(history_embeddings (B, N, D), batch) -> (B, N, D)`` per-position query embeddings.

    Output position i summarises history positions 0..i and is trained to predict ``batch.next_ids()[:, i]``;
    outputs at padded positions are arbitrary and never used. Encoders must be causal (output i does not
    depend on positions > i) and padding-invariant. ``dim`` is the output width.
    """

    dim: int

    @abstractmethod
    def forward(self, history_embeddings: Tensor, batch: SequenceBatch) -> Tensor:
        """(B, N, D) embeddings of ``batch.history_ids`` -> (B, N, D)."""


def xavier_normal_except(module: nn.Module, skip: tuple[str, ...]) -> None:
    """Re-initialise every >= 2-D parameter whose name contains none of ``skip`` with xavier_normal_ (spec §1.9)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.dim() >= 2 and not any(s in name for s in skip):
                nn.init.xavier_normal_(param)
