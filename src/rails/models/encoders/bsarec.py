"""BSARec-style encoder: self-attention mixed with a frequency-domain filter (Shin et al., AAAI'24).

Each block mixes two views of the history, ``alpha * filter(x) + (1 - alpha) * attention(x)``, then a GELU
feed-forward: the *filter* keeps the lowest ``low_frequencies`` bins of the real FFT over the sequence axis
and rescales the rest by a learned ``beta^2`` per feature (an inductive bias towards the user's slowly
changing taste), the *attention* is causal multi-head self-attention; both are post-norm residual branches.

The filter sees the whole history, so an output depends on later items: the encoder is **not causal**
(``causal = False``), and the retrieval module supervises its last position only (train it with
``data.train_examples=prefixes``, one example per training target, as the S3-Rec-family code does).
Internally the histories are right-aligned in a ``max_seq_len`` buffer (padding first, the newest item
last, positions 0 .. N-1 of that buffer), so the FFT always spans the same N slots whatever the batch width;
padding slots hold their (learned) position embedding only, as in the published code, and the outputs are
returned left-aligned like every encoder's (zero at padding).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from rails.checks import require, require_at_least
from rails.models.encoders.base import (
    OutputNorm,
    OutputNormalization,
    SequenceEncoder,
    SequenceHistory,
    check_encoder_args,
)

LAYER_NORM_EPS = 1e-12


class _FrequencyFilter(nn.Module):
    """LN(x + Dropout(low + beta^2 * (x - low))), ``low`` = the ``keep`` lowest rFFT bins of x over N."""

    def __init__(self, dim: int, keep: int, dropout: float) -> None:
        super().__init__()
        self.keep = keep
        self.sqrt_beta = nn.Parameter(torch.randn(1, 1, dim))
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, N, D); the FFT in float32 (no bf16 FFT on CUDA)."""
        n = x.shape[1]
        spectrum = torch.fft.rfft(x.float(), dim=1, norm="ortho")
        bins = torch.arange(spectrum.shape[1], device=x.device) < self.keep
        low = torch.fft.irfft(spectrum * bins[None, :, None], n=n, dim=1, norm="ortho").to(x.dtype)
        filtered = low + self.sqrt_beta.square().to(x.dtype) * (x - low)
        return self.norm(x + self.dropout(filtered))


class _Block(nn.Module):
    """h = alpha * filter(x) + (1 - alpha) * LN(x + Dropout(MHA(x))); out = LN(h + Dropout(FFN(h)))."""

    def __init__(
        self, dim: int, heads: int, ffn_hidden: int, keep: int, alpha: float, dropout: float
    ) -> None:
        super().__init__()
        self.alpha = alpha
        self.filter = _FrequencyFilter(dim, keep, dropout)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.attention_dropout = nn.Dropout(dropout)
        self.attention_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_hidden), nn.GELU(), nn.Linear(ffn_hidden, dim))
        self.ffn_dropout = nn.Dropout(dropout)
        self.ffn_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(self, x: Tensor, blocked: Tensor) -> Tensor:
        """(B, N, D), (B * heads, N, N) bool True = may not attend -> (B, N, D)."""
        a, _ = self.attention(x, x, x, attn_mask=blocked, need_weights=False)
        attended = self.attention_norm(x + self.attention_dropout(a))
        h = self.alpha * self.filter(x) + (1.0 - self.alpha) * attended
        return self.ffn_norm(h + self.ffn_dropout(self.ffn(h)))


def blocked_keys(valid: Tensor) -> Tensor:
    """(B, N) valid slots (right-aligned) -> (B, N, N) True where query slot i may not attend to key slot j.

    A valid query attends causally to valid keys. A padding query attends to every slot: the published code
    adds one -10000 mask for "padding or future" keys, which for a padding row covers every key and so
    cancels in its softmax. Its state feeds the frequency filter of the next block (the low band spans all N
    slots), so the padding rows are kept as that code computes them.
    """
    slots = valid.shape[1]
    slot = torch.arange(slots, device=valid.device)
    allowed = (slot[None, :, None] >= slot[None, None, :]) & valid[:, None, :]
    return ~(allowed | ~valid[:, :, None])


class BSARec(SequenceEncoder):
    """Attention with a frequency-domain inductive bias (module docstring). Not causal.

    Args:
        dim: D (item embedding width).
        max_seq_len: N, the FFT length (histories are right-aligned in N slots).
        num_blocks: blocks (2 in the paper's Amazon runs).
        num_heads: attention heads (1).
        ffn_hidden_dim: feed-forward width (4 D).
        dropout: embedding, attention, filter and feed-forward dropout (0.5).
        alpha: weight of the filter branch (0.7 on Beauty).
        low_frequencies: rFFT bins kept as the low band (the paper's c = 5 keeps c // 2 + 1 = 3).
        output_norm: "l2" (dot product), "layer_norm" (MoL), "none", or None = the similarity head's
            ``query_norm`` (see :class:`~rails.models.encoders.base.OutputNormalization`).
        init_std: N(0, init_std^2) initialisation of the linear layers and position embeddings (0.02).
    """

    causal = False

    def __init__(
        self,
        dim: int = 64,
        max_seq_len: int = 50,
        num_blocks: int = 2,
        num_heads: int = 1,
        ffn_hidden_dim: int = 256,
        dropout: float = 0.5,
        alpha: float = 0.7,
        low_frequencies: int = 3,
        output_norm: OutputNorm | None = None,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.check_args(locals())
        self.dim = dim
        self.max_seq_len = max_seq_len
        self.num_heads = num_heads
        self.positions = nn.Embedding(max_seq_len, dim)
        self.input_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.input_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            _Block(dim, num_heads, ffn_hidden_dim, low_frequencies, alpha, dropout) for _ in range(num_blocks)
        )
        self.output_norm = OutputNormalization(dim, output_norm)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Linear | nn.Embedding):
                    module.weight.normal_(0.0, init_std)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    module.bias.zero_()
            for block in self.blocks:
                block.attention.in_proj_weight.normal_(0.0, init_std)
                block.attention.in_proj_bias.zero_()

    @staticmethod
    def check_args(args: Mapping[str, Any]) -> None:
        """Argument rules (see :func:`rails.config.check_config`)."""
        check_encoder_args(args)
        require_at_least(args, 1, "ffn_hidden_dim", "low_frequencies")
        require(0.0 <= args["alpha"] <= 1.0, "alpha", args["alpha"], "must lie in [0, 1]")
        dim, heads, n, keep = args["dim"], args["num_heads"], args["max_seq_len"], args["low_frequencies"]
        require(dim % heads == 0, "dim", dim, f"must be divisible by num_heads={heads}")
        require(
            keep <= n // 2 + 1, "low_frequencies", keep, f"must be <= max_seq_len // 2 + 1 = {n // 2 + 1}"
        )
        require(args["init_std"] > 0, "init_std", args["init_std"], "must be > 0")

    def forward(self, history_embeddings: Tensor, history: SequenceHistory) -> Tensor:
        """(B, n, D) left-aligned embeddings of the history items -> (B, n, D) (padding outputs zero)."""
        batch, n, _ = history_embeddings.shape
        slots = self.max_seq_len
        if n > slots:
            raise ValueError(f"sequence length {n} exceeds the encoder's max_seq_len {slots}")
        lengths = history.lengths.clamp(max=n)
        slot = torch.arange(slots, device=lengths.device)
        first = (slots - lengths)[:, None]  # (B, 1) slot of the oldest kept item
        valid = slot[None, :] >= first  # (B, N) right-aligned
        source = (slot[None, :] - first).clamp(0, n - 1)
        x = history_embeddings.gather(1, source[..., None].expand(-1, -1, self.dim))
        x = x * valid[..., None].to(x.dtype)  # padding slots: no item, their position embedding only
        # as in the published code, padding slots carry states through the blocks and the filter sees all N
        # slots (attention never attends to them from a valid slot)
        x = self.input_dropout(self.input_norm(x + self.positions.weight[None]))
        blocked = blocked_keys(valid).repeat_interleave(self.num_heads, dim=0)  # (B * heads, N, N)
        for block in self.blocks:
            x = block(x, blocked)
        back = (torch.arange(n, device=x.device)[None, :] + first).clamp(max=slots - 1)  # (B, n)
        out = x.gather(1, back[..., None].expand(-1, -1, self.dim))
        left_valid = torch.arange(n, device=x.device)[None, :] < lengths[:, None]
        return self.output_norm(out) * left_valid[..., None].to(out.dtype)
