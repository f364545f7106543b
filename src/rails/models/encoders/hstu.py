"""HSTU (Zhai et al., "Actions Speak Louder than Words", arXiv 2402.17152) as used by RAILS (spec §4).

One layer (spec §4.2), on (B, N, D) inputs x:

    x_hat = LayerNorm(x)                                   # no affine, eps 1e-6
    U, V, Q, K = split(SiLU(x_hat W_uvqk))                 # h*d_v, h*d_v, h*d_qk, h*d_qk
    O = HSTUAttention(Q, K, V) + relative position/time bias   (rails.models.encoders.hstu_attention)
    y = x + W_o(Dropout(U * LayerNorm(O)))

Initialisation (spec §1.9, an explicit choice): the reference re-initialises every parameter outside the
HSTU layers with xavier_normal, so the absolute position table gets std sqrt(2 / (rows + D)) where the
reference table has rows = max_seq_len + 11 (211 x 50 -> 0.0875); we draw N(0, that std) for our
(max_seq_len, D) table. Inside the layers the reference keeps the module defaults: W_uvqk ~ N(0, 0.02),
W_o weight xavier_uniform and bias PyTorch-default U(+-1/sqrt(fan_in)), both bias tables ~ N(0, 0.02).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from rails.checks import require, require_at_least, require_positive, require_probability
from rails.models.encoders.base import (
    OutputNorm,
    OutputNormalization,
    PositionAlignment,
    PositionalInput,
    SequenceEncoder,
    SequenceHistory,
    check_encoder_args,
)
from rails.models.encoders.hstu_attention import AttentionImpl, hstu_attention

# The reference pads sequences with max_output_len + 1 = 11 extra slots; its position table and its
# attention normaliser are sized max_seq_len + 11 (spec §3.1, §4.2).
REFERENCE_EXTRA_SLOTS = 11


class RelativeBias(nn.Module):
    """Relative position + log-bucketed time bias tables of one layer (spec §4.3).

    Args:
        max_seq_len: N; the position table has one entry per distance i - j in [0, N).
        num_time_buckets: largest time bucket (128); the time table has ``num_time_buckets + 1`` entries.
        time_bucket_divisor: bucket width in natural-log units (0.301).
    """

    def __init__(self, max_seq_len: int, num_time_buckets: int, time_bucket_divisor: float) -> None:
        super().__init__()
        if num_time_buckets < 1:
            raise ValueError(f"model.encoder.num_time_buckets must be >= 1, got {num_time_buckets}")
        if time_bucket_divisor <= 0:
            raise ValueError(f"model.encoder.time_bucket_divisor must be > 0, got {time_bucket_divisor}")
        # The reference table has 2n - 1 entries indexed n - 1 + j - i; only j <= i is ever used, so we keep
        # the causal half indexed by the distance i - j (same values, same gradients).
        self.position_weights = nn.Parameter(torch.empty(max_seq_len).normal_(0.0, 0.02))
        self.time_weights = nn.Parameter(torch.empty(num_time_buckets + 1).normal_(0.0, 0.02))
        self.time_bucket_divisor = time_bucket_divisor


class HSTULayer(nn.Module):
    """One sequential transduction unit ("uvqk", "rel_bias"), see the module docstring.

    Args:
        dim: D.
        max_seq_len: N (sizes the position bias table).
        num_heads: h.
        qk_dim: d_qk per head.
        v_dim: d_v per head.
        linear_dropout: dropout on U * LayerNorm(O) before W_o.
        attention_normalizer: the constant n that SiLU(scores) is divided by.
        num_time_buckets: see :class:`RelativeBias`.
        time_bucket_divisor: see :class:`RelativeBias`.
        attention_impl: "auto" | "torch" | "triton" (see :func:`hstu_attention`).
    """

    def __init__(
        self,
        dim: int,
        max_seq_len: int,
        num_heads: int,
        qk_dim: int,
        v_dim: int,
        linear_dropout: float,
        attention_normalizer: float,
        num_time_buckets: int,
        time_bucket_divisor: float,
        attention_impl: AttentionImpl,
    ) -> None:
        super().__init__()
        self.num_heads, self.qk_dim, self.v_dim = num_heads, qk_dim, v_dim
        self.attention_normalizer = attention_normalizer
        self.attention_impl: AttentionImpl = attention_impl
        self.uvqk = nn.Parameter(torch.empty(dim, 2 * num_heads * (v_dim + qk_dim)).normal_(0.0, 0.02))
        self.output = nn.Linear(num_heads * v_dim, dim)
        nn.init.xavier_uniform_(self.output.weight)
        self.bias = RelativeBias(max_seq_len, num_time_buckets, time_bucket_divisor)
        self.dropout = nn.Dropout(linear_dropout)
        self.eps = 1e-6

    def forward(self, x: Tensor, timestamps: Tensor, next_timestamps: Tensor, lengths: Tensor) -> Tensor:
        """(B, N, D) -> (B, N, D); timestamps / next_timestamps (B, N) int64, lengths (B,)."""
        b, n, d = x.shape
        h, dqk, dv = self.num_heads, self.qk_dim, self.v_dim
        normed = nn.functional.layer_norm(x, (d,), eps=self.eps)
        uvqk = nn.functional.silu(normed @ self.uvqk.to(normed.dtype))
        u, v, q, k = torch.split(uvqk, [h * dv, h * dv, h * dqk, h * dqk], dim=-1)
        attended = hstu_attention(
            q.reshape(b, n, h, dqk),
            k.reshape(b, n, h, dqk),
            v.reshape(b, n, h, dv),
            self.bias.position_weights,
            self.bias.time_weights,
            timestamps,
            next_timestamps,
            lengths,
            self.attention_normalizer,
            self.bias.time_bucket_divisor,
            self.attention_impl,
        ).reshape(b, n, h * dv)
        gated = u * nn.functional.layer_norm(attended, (h * dv,), eps=self.eps)
        return x + self.output(self.dropout(gated))


class HSTU(SequenceEncoder):
    """Stack of HSTU layers over ``PositionalInput``, with output post-processing (spec §4).

    Args:
        dim: D (item embedding width).
        max_seq_len: N, longest history (sizes the position tables).
        num_blocks: layers (8 / 16 / 16 for RAILS "HSTU-large" ML-1M / ML-20M / Books).
        num_heads: h per layer.
        qk_dim: d_qk per head.
        v_dim: d_v per head.
        dropout: input dropout after the positional embedding (0.2 ML, 0.5 Books).
        linear_dropout: dropout before each layer's output projection (same values).
        attention_normalizer: the constant n SiLU attention is divided by. ``None`` = the reference's
            padded length ``max_seq_len + 11`` (211 for ML, 61 for Books), which reproduces the paper
            numerics exactly; any positive constant is valid (it does not depend on the batch, so padding
            invariance holds either way).
        num_time_buckets: largest log time bucket (128).
        time_bucket_divisor: natural-log bucket width (0.301).
        output_norm: "l2" (dot product), "layer_norm" (MoL), "none", or None = the similarity head's
            ``query_norm`` (see :class:`~rails.models.encoders.base.OutputNormalization`).
        attention_impl: "auto" (fused Triton kernel on CUDA, plain PyTorch elsewhere), "torch" or "triton".
        position_alignment: "left" (spec, default): position embeddings counted from the oldest kept item;
            "right": from the newest (left-padded SASRec / S3-Rec layout; see ``PositionalInput``).
    """

    def __init__(
        self,
        dim: int = 50,
        max_seq_len: int = 200,
        num_blocks: int = 2,
        num_heads: int = 1,
        qk_dim: int = 50,
        v_dim: int = 50,
        dropout: float = 0.2,
        linear_dropout: float = 0.2,
        attention_normalizer: float | None = None,
        num_time_buckets: int = 128,
        time_bucket_divisor: float = 0.301,
        output_norm: OutputNorm | None = None,
        attention_impl: AttentionImpl = "auto",
        position_alignment: PositionAlignment = "left",
    ) -> None:
        super().__init__()
        self.check_args(locals())
        if attention_normalizer is None:
            attention_normalizer = float(max_seq_len + REFERENCE_EXTRA_SLOTS)
        self.dim = dim
        self.attention_normalizer = float(attention_normalizer)
        self.input = PositionalInput(dim, max_seq_len, dropout, position_alignment)
        with torch.no_grad():  # spec §1.9: xavier_normal as for a (max_seq_len + 11, D) table
            self.input.positions.weight.normal_(
                0.0, math.sqrt(2.0 / (max_seq_len + REFERENCE_EXTRA_SLOTS + dim))
            )
        self.layers = nn.ModuleList(
            HSTULayer(
                dim,
                max_seq_len,
                num_heads,
                qk_dim,
                v_dim,
                linear_dropout,
                self.attention_normalizer,
                num_time_buckets,
                time_bucket_divisor,
                attention_impl,
            )
            for _ in range(num_blocks)
        )
        self.output_norm = OutputNormalization(dim, output_norm)

    @staticmethod
    def check_args(args: Mapping[str, Any]) -> None:
        """Argument rules (see :func:`rails.config.check_config`)."""
        check_encoder_args(args)
        require_at_least(args, 1, "qk_dim", "v_dim", "num_time_buckets")
        require_probability(args, "linear_dropout")
        require_positive(args, "time_bucket_divisor")
        normalizer = args["attention_normalizer"]
        require(
            normalizer is None or normalizer > 0, "attention_normalizer", normalizer, "must be > 0 or null"
        )
        impl = args["attention_impl"]
        require(impl in ("auto", "torch", "triton"), "attention_impl", impl, "must be auto, torch or triton")

    def set_attention_impl(self, impl: AttentionImpl) -> None:
        """Switch every layer's attention implementation ("auto" | "torch" | "triton")."""
        if impl not in ("auto", "torch", "triton"):
            raise ValueError(f"attention_impl must be auto|torch|triton, got {impl!r}")
        for layer in self.layers:
            layer.attention_impl = impl

    def forward(self, history_embeddings: Tensor, history: SequenceHistory) -> Tensor:
        """(B, N, D) embeddings of the history items -> (B, N, D); padded rows are zero before the norm."""
        mask = history.valid_mask
        keep = mask[..., None].to(history_embeddings.dtype)
        x = self.input(history_embeddings, mask)
        for layer in self.layers:
            x = layer(x, history.timestamps, history.next_timestamps, history.lengths) * keep.to(x.dtype)
        return self.output_norm(x)
