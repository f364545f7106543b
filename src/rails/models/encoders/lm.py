"""LMEncoder: a Hugging Face ``AutoModel`` text encoder for question/passage retrieval (spec §8).

The encoder maps tokenised text to one flat vector per text:

- ``pooling="cls"``: the first token state, (B, D).
- ``pooling="mean"``: the mean of the non-padding token states, (B, D) (sentence-transformers' pooling).
- ``pooling="first_p"``: the first P token states, flattened to (B, P*D) (spec §8 mode A); positions beyond
  a text's length are zero.
- ``pooling="mixture"``: P learned mixtures over token positions (spec §8 mode B): an MLP
  ``Linear(D, h) -> LayerNorm -> SiLU -> Linear(h, max_length*P)`` reads the state at ``mixer_position``,
  its outputs are reshaped to (B, max_length, P), padding positions are masked out, a softmax over
  positions gives weights w, and component p is ``sum_n w[n, p] * H[n]``; flattened to (B, P*D).

The flat (B, P*D) output feeds the dot-product head directly (pooling cls/mean) or the MoL head through
:class:`rails.models.similarity.lm_components.TokenComponents`, which reshapes it to (B, P, D) components;
MoL's gating network reads the flat vector. Queries and passages go through one shared transformer
(``shared=True``) or two copies of the same checkpoint; mixers are always per side.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from rails.pretrained import resolve_pretrained

Pooling = Literal["cls", "mean", "first_p", "mixture"]
POOLINGS = ("cls", "mean", "first_p", "mixture")
MASKED_LOGIT = -1.0e3  # mixing logit of padding positions (spec §8: filter_invalid_positions)


def load_pretrained(name_or_path: str) -> nn.Module:
    """``AutoModel.from_pretrained`` in train mode with float32 parameters (a half-precision checkpoint, e.g. of
    scripts/half_checkpoint.py, loads as its float32 values: newer transformers keep the stored dtype; the trainer's
    precision decides the compute dtype), without the unused pooler head (no gradient under DDP)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(resolve_pretrained(name_or_path)).float()
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model.train()  # from_pretrained returns eval mode; the owning module's mode must decide (dropout)


def enable_checkpointing(model: nn.Module) -> None:
    """Turn on activation (gradient) checkpointing of a Hugging Face model, old or new transformers API."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


class TokenMixer(nn.Module):
    """P softmax mixtures over token positions, computed from one token state (spec §8 mode B).

    Args:
        hidden_size: D of the token states.
        num_components: P.
        max_length: the longest token sequence the mixer can weight (>= the truncation length).
        mixer_hidden_dim: h of the MLP.
        position: token whose state drives the mixing weights (0 = CLS, "v2"; P = "v4").
    """

    def __init__(
        self, hidden_size: int, num_components: int, max_length: int, mixer_hidden_dim: int, position: int
    ) -> None:
        super().__init__()
        self.num_components = num_components
        self.max_length = max_length
        self.position = position
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, mixer_hidden_dim),
            nn.LayerNorm(mixer_hidden_dim),
            nn.SiLU(),
            nn.Linear(mixer_hidden_dim, max_length * num_components),
        )
        for layer in (self.mlp[0], self.mlp[3]):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def weights(self, states: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, L, D) states, (B, L) mask -> (B, L, P) mixing weights (each column sums to 1 over valid tokens)."""
        batch, length, _ = states.shape
        if length > self.max_length:
            raise ValueError(
                f"text of {length} tokens exceeds model.encoder.max_length={self.max_length} of the mixer"
            )
        logits = self.mlp(states[:, min(self.position, length - 1)])
        logits = logits.view(batch, self.max_length, self.num_components)[:, :length]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32)).masked_fill(
            attention_mask[:, :, None] == 0, MASKED_LOGIT
        )
        return torch.softmax(logits, dim=1)

    def forward(self, states: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, L, D) states, (B, L) mask -> (B, P, D) mixed components."""
        weights = self.weights(states, attention_mask).to(states.dtype)
        return torch.einsum("blp,bld->bpd", weights, states)


def pool(states: Tensor, attention_mask: Tensor, pooling: str, num_components: int) -> Tensor:
    """Parameter-free pooling of (B, L, D) token states: cls / mean -> (B, D); first_p -> (B, P*D)."""
    if pooling == "cls":
        return states[:, 0]
    mask = attention_mask.to(states.dtype)[:, :, None]
    if pooling == "mean":
        return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
    if pooling == "first_p":
        batch, length, dim = states.shape
        first = (states * mask)[:, :num_components]
        if length < num_components:
            first = torch.cat([first, first.new_zeros(batch, num_components - length, dim)], dim=1)
        return first.reshape(batch, num_components * dim)
    raise ValueError(f"model.encoder.pooling must be one of {POOLINGS}, got {pooling!r}")


class LMEncoder(nn.Module):
    """Hugging Face transformer -> one flat embedding per question or passage.

    Args:
        model_name_or_path: Hub id, directory, or ``pkg:<package>/<subdir>`` (see :func:`rails.pretrained.resolve_pretrained`).
        pooling: ``cls`` | ``mean`` | ``first_p`` | ``mixture`` (module docstring).
        num_components: P for ``first_p`` / ``mixture`` (must be 1 for ``cls`` / ``mean``).
        shared: one transformer for both sides; False loads a second copy for passages.
        max_length: longest input the ``mixture`` pooling accepts (>= both truncation lengths).
        mixer_hidden_dim: hidden width of the mixing MLP.
        mixer_position: token whose state drives the mixing weights.
        gradient_checkpointing: recompute transformer activations in the backward pass.

    Attributes:
        hidden_size: D of the transformer.
        dim: output width (D, or P*D for ``first_p`` / ``mixture``).
    """

    def __init__(
        self,
        model_name_or_path: str,
        pooling: Pooling = "mean",
        num_components: int = 1,
        shared: bool = True,
        max_length: int = 512,
        mixer_hidden_dim: int = 256,
        mixer_position: int = 0,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"model.encoder.pooling must be one of {POOLINGS}, got {pooling!r}")
        if num_components < 1 or (pooling in ("cls", "mean") and num_components != 1):
            raise ValueError(
                f"model.encoder.num_components={num_components}: must be >= 1, and 1 for pooling={pooling!r}"
            )
        if pooling == "mixture" and not 0 <= mixer_position < max_length:
            raise ValueError(f"model.encoder.mixer_position={mixer_position} must lie in [0, max_length)")
        self.pooling = pooling
        self.num_components = num_components
        self.shared = shared
        self.towers = nn.ModuleDict({"query": load_pretrained(model_name_or_path)})
        if not shared:
            self.towers["passage"] = load_pretrained(model_name_or_path)
        if gradient_checkpointing:
            for tower in self.towers.values():
                enable_checkpointing(tower)
        self.hidden_size = int(self.towers["query"].config.hidden_size)
        self.dim = self.hidden_size * num_components
        self.mixers = nn.ModuleDict()
        if pooling == "mixture":
            for side in ("query", "passage"):
                self.mixers[side] = TokenMixer(
                    self.hidden_size, num_components, max_length, mixer_hidden_dim, mixer_position
                )

    def token_states(self, input_ids: Tensor, attention_mask: Tensor, side: str) -> Tensor:
        """(B, L) tokens of ``side`` ("query" | "passage") -> (B, L, D) last hidden states."""
        tower = self.towers[side if side in self.towers else "query"]
        return tower(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def forward(self, input_ids: Tensor, attention_mask: Tensor, side: str = "query") -> Tensor:
        """(B, L) token ids and mask -> (B, dim) embeddings of questions or passages."""
        if side not in ("query", "passage"):
            raise ValueError(f"side must be 'query' or 'passage', got {side!r}")
        states = self.token_states(input_ids, attention_mask, side)
        if self.pooling == "mixture":
            return self.mixers[side](states, attention_mask).flatten(1)
        return pool(states, attention_mask, self.pooling, self.num_components)

    def embed_queries(self, tokens: Any) -> Tensor:
        """TokenizedText (B, L_q) -> (B, dim)."""
        return self(tokens.input_ids, tokens.attention_mask, "query")

    def embed_passages(self, tokens: Any) -> Tensor:
        """TokenizedText (B, L_x) -> (B, dim)."""
        return self(tokens.input_ids, tokens.attention_mask, "passage")

    def extra_repr(self) -> str:
        return f"pooling={self.pooling}, num_components={self.num_components}, shared={self.shared}"
