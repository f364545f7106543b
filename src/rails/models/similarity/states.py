"""Typed head states and the Mixture-of-Logits mixing parameters.

A head's ``encode_queries`` / ``encode_items`` return a :class:`HeadState`: a dataclass of tensors that share
leading dimensions (B for queries; ``*L`` for items: (X,) for a shared corpus, (B, X) for per-query
candidates) followed by per-field trailing dimensions. Indexes and the evaluator chunk, gather, shard,
concatenate and move states through these methods without knowing the head:

- ``state.index(i)``: every tensor indexed along its leading dims (a slice or a tuple of slices for chunks);
- ``state.gather(positions)``: (X, ...) state and (*S,) int64 positions -> (*S, ...) state (per-query
  candidates: (B, K) positions give a (B, K, ...) state);
- ``type(state).cat(states)``: concatenation along the first leading dim;
- ``state.to(device | dtype)``: every tensor moved / cast;
- ``len(state)``: the first leading dim; ``state.lead_shape``: all leading dims.

States: :class:`DotState` (dot-product head), :class:`MoLQueryState` / :class:`MoLItemState`
(Mixture-of-Logits head, pair index p = i * P_X + j). :class:`MoLMixing` carries what a fused kernel needs of
the MoL head's gating as plain tensors and numbers (no module).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

StateT = TypeVar("StateT", bound="HeadState")


@dataclass(frozen=True, eq=False)
class HeadState:
    """Base of every head state: tensor fields with common leading dims (see the module docstring).

    Subclasses declare their tensor fields and ``trailing_dims`` (field name -> number of trailing dims).
    """

    trailing_dims: ClassVar[dict[str, int]] = {}

    def __post_init__(self) -> None:
        shapes = {name: self._lead_of(name) for name in self.trailing_dims}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"{type(self).__name__}: fields disagree on the leading dims: {shapes}")

    def _lead_of(self, name: str) -> tuple[int, ...]:
        value: Tensor = getattr(self, name)
        trailing = self.trailing_dims[name]
        if value.dim() < trailing + 1:
            raise ValueError(
                f"{type(self).__name__}.{name} needs at least one leading dim before its {trailing} trailing "
                f"dims, got shape {tuple(value.shape)}"
            )
        return tuple(value.shape[: value.dim() - trailing])

    def tensors(self) -> dict[str, Tensor]:
        """Field name -> tensor."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def _apply(self: StateT, fn: Callable[[Tensor], Tensor]) -> StateT:
        return type(self)(**{name: fn(value) for name, value in self.tensors().items()})

    @property
    def lead_shape(self) -> tuple[int, ...]:
        """The leading dims shared by every field ((B,), (X,) or (B, X))."""
        return self._lead_of(next(iter(self.trailing_dims)))

    def __len__(self) -> int:
        return self.lead_shape[0]

    @property
    def device(self) -> torch.device:
        return next(iter(self.tensors().values())).device

    def index(self: StateT, index: slice | tuple[slice | int, ...] | int) -> StateT:
        """Every tensor indexed along its leading dims (chunks: ``state.index(slice(start, end))``)."""
        return self._apply(lambda value: value[index])

    def gather(self: StateT, positions: Tensor) -> StateT:
        """(X, ...) state and (*S,) int64 positions -> (*S, ...) state."""
        if positions.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"gather() needs integer positions, got {positions.dtype}")
        return self._apply(lambda value: value[positions])

    def to(self: StateT, *args: Any, **kwargs: Any) -> StateT:
        """Every tensor through ``Tensor.to(*args, **kwargs)`` (device and / or dtype)."""
        return self._apply(lambda value: value.to(*args, **kwargs))

    @classmethod
    def cat(cls: type[StateT], states: Sequence[StateT]) -> StateT:
        """Concatenate states along the first leading dim."""
        if not states:
            raise ValueError(f"{cls.__name__}.cat() needs at least one state")
        kinds = {type(state) for state in states}
        if kinds != {cls}:
            raise ValueError(f"{cls.__name__}.cat() got states of types {sorted(k.__name__ for k in kinds)}")
        names = [f.name for f in fields(cls)]
        return cls(**{name: torch.cat([getattr(state, name) for state in states]) for name in names})


@dataclass(frozen=True, eq=False)
class DotState(HeadState):
    """Dot-product head state: ``vectors`` (*L, D) (L2-normalised when the head normalises)."""

    vectors: Tensor
    trailing_dims: ClassVar[dict[str, int]] = {"vectors": 1}


@dataclass(frozen=True, eq=False)
class MoLState(HeadState):
    """Mixture-of-Logits state: L2-normalised ``components`` (*L, P_side, d_P) and a ``gate`` (*L, P) part."""

    components: Tensor
    gate: Tensor
    trailing_dims: ClassVar[dict[str, int]] = {"components": 2, "gate": 1}


@dataclass(frozen=True, eq=False)
class MoLQueryState(MoLState):
    """Query side: ``components`` (B, P_Q, d_P) and the query-only gating part ``gate`` (B, P)."""


@dataclass(frozen=True, eq=False)
class MoLItemState(MoLState):
    """Item side: ``components`` (*L, P_X, d_P) and the item-only gating part ``gate`` (*L, P)."""


@dataclass(frozen=True, eq=False)
class MoLMixing:
    """What the MoL head's mixture step needs besides the states, as tensors and plain numbers.

    Given pair logits ``L = <f_i, g_j> / temperature`` (P = P_Q * P_X per (query, item)), the gate logits are
    ``s = SiLU(q_gate * i_gate + qi)`` ("glu_silu") with ``qi = SiLU(L W1^T + b1) W2^T + b2``, the weights
    ``pi = softmax(s)`` and the score ``sum_p pi_p L_p``. The "glu_silu_ln" combination also applies a
    LayerNorm that is not carried here (kernels implement "glu_silu" only).

    Attributes:
        temperature: tau dividing every component cosine.
        combination: "glu_silu", "glu_silu_ln" or "none".
        num_query_components: P_Q.
        num_item_components: P_X.
        qi_hidden_weight: (H, P) W1 of the query-item gating part (detached).
        qi_hidden_bias: (H,) b1, or None.
        qi_out_weight: (P, H) W2 (detached).
        qi_out_bias: (P,) b2, or None.
        training: the head is in training mode (softmax and gating dropout active, which kernels do not
            implement).
    """

    temperature: float
    combination: str
    num_query_components: int
    num_item_components: int
    qi_hidden_weight: Tensor
    qi_hidden_bias: Tensor | None
    qi_out_weight: Tensor
    qi_out_bias: Tensor | None
    training: bool

    @property
    def hidden_dim(self) -> int:
        """H, the hidden width of the query-item gating part."""
        return int(self.qi_hidden_weight.shape[0])
