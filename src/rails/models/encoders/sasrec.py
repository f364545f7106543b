"""SASRec (Kang & McAuley, ICDM'18) as configured in the RAILS/HSTU baselines (spec §4.6)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from rails.checks import require, require_at_least
from rails.models.encoders.base import (
    OutputNorm,
    OutputNormalization,
    PositionAlignment,
    PositionalInput,
    SequenceEncoder,
    SequenceHistory,
    check_encoder_args,
    xavier_normal_except,
)


class _PointWiseFeedForward(nn.Module):
    """z + Dropout(Conv1d_k1(Dropout(ReLU(Conv1d_k1(z))))), D -> hidden -> D."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(dim, hidden_dim, kernel_size=1)
        self.conv2 = nn.Conv1d(hidden_dim, dim, kernel_size=1)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, z: Tensor) -> Tensor:
        h = self.dropout1(torch.relu(self.conv1(z.transpose(1, 2))))
        return z + self.dropout2(self.conv2(h)).transpose(1, 2)


class SASRec(SequenceEncoder):
    """Causal self-attention encoder.

    Per block: Q = LN(x); a = MHA(Q, x, x, causal); z = LN(Q + a); x = FFN(z) * mask.

    Args:
        dim: D (item embedding width).
        max_seq_len: N.
        num_blocks: transformer blocks (2 ML-1M, 4 ML-20M/Books).
        num_heads: attention heads (1 ML-1M, 4 ML-20M/Books).
        ffn_hidden_dim: feed-forward hidden width (= D in the paper configs).
        dropout: input, attention and FFN dropout (0.2 ML, 0.5 Books).
        output_norm: "l2" (dot product), "layer_norm" (MoL), "none", or None = the similarity head's
            ``query_norm`` (see :class:`~rails.models.encoders.base.OutputNormalization`).
        position_alignment: "left" (spec, default): position embeddings counted from the oldest kept item;
            "right": from the newest (left-padded SASRec / S3-Rec layout; see ``PositionalInput``).
    """

    def __init__(
        self,
        dim: int = 50,
        max_seq_len: int = 200,
        num_blocks: int = 2,
        num_heads: int = 1,
        ffn_hidden_dim: int = 50,
        dropout: float = 0.2,
        output_norm: OutputNorm | None = None,
        position_alignment: PositionAlignment = "left",
    ) -> None:
        super().__init__()
        self.check_args(locals())
        self.dim = dim
        self.input = PositionalInput(dim, max_seq_len, dropout, position_alignment)
        self.attention_norms = nn.ModuleList(
            nn.LayerNorm(dim, eps=1e-8, elementwise_affine=False) for _ in range(num_blocks)
        )
        self.attentions = nn.ModuleList(
            nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
            for _ in range(num_blocks)
        )
        self.ffn_norms = nn.ModuleList(
            nn.LayerNorm(dim, eps=1e-8, elementwise_affine=False) for _ in range(num_blocks)
        )
        self.ffns = nn.ModuleList(
            _PointWiseFeedForward(dim, ffn_hidden_dim, dropout) for _ in range(num_blocks)
        )
        self.output_norm = OutputNormalization(dim, output_norm)
        xavier_normal_except(self, skip=("input.",))

    @staticmethod
    def check_args(args: Mapping[str, Any]) -> None:
        """Argument rules (see :func:`rails.config.check_config`)."""
        check_encoder_args(args)
        require_at_least(args, 1, "ffn_hidden_dim")
        dim, heads = args["dim"], args["num_heads"]
        require(dim % heads == 0, "dim", dim, f"must be divisible by num_heads={heads}")

    def forward(self, history_embeddings: Tensor, history: SequenceHistory) -> Tensor:
        """(B, N, D) embeddings of the history items -> (B, N, D)."""
        mask = history.valid_mask
        n = history_embeddings.shape[1]
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=mask.device), diagonal=1)
        x = self.input(history_embeddings, mask)
        keep = mask[..., None].to(x.dtype)
        for attn_norm, attn, ffn_norm, ffn in zip(
            self.attention_norms, self.attentions, self.ffn_norms, self.ffns
        ):
            q = attn_norm(x)
            a, _ = attn(q, x, x, attn_mask=causal, need_weights=False)
            x = ffn(ffn_norm(q + a)) * keep
        return self.output_norm(x)
