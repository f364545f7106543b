"""Component functions that turn an LM encoder's flat token-state vector into MoL components (spec §8).

:class:`rails.models.encoders.lm.LMEncoder` with ``pooling="first_p"`` or ``"mixture"`` emits P token
states of width D as one flat (..., P*D) vector. Passed as ``query_components`` / ``item_components`` to
``MoLSimilarity``, :class:`TokenComponents` reshapes it to (..., P, D) (optionally projecting each
component to d_P); the head then L2-normalises every component, and its gating network keeps reading the
raw flat vector.
"""

from __future__ import annotations

from torch import Tensor, nn


class TokenComponents(nn.Module):
    """(..., P*D) flat token states -> (..., P, d_P) components.

    Args:
        num_components: P.
        input_dim: D, the width of one token state.
        output_dim: d_P; None keeps d_P = D with no parameters (the spec's LM setting), otherwise one
            Linear(D, d_P) shared by the P components.
        dropout: dropout on the components (before the projection).
    """

    def __init__(
        self, num_components: int, input_dim: int, output_dim: int | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if num_components < 1 or input_dim < 1 or (output_dim is not None and output_dim < 1):
            raise ValueError(
                f"TokenComponents: num_components={num_components}, input_dim={input_dim} and "
                f"output_dim={output_dim} must be >= 1"
            )
        self.num_components = num_components
        self.input_dim = input_dim
        self.output_dim = output_dim or input_dim
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(input_dim, output_dim) if output_dim is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """(..., P*D) -> (..., P, d_P)."""
        expected = self.num_components * self.input_dim
        if x.shape[-1] != expected:
            raise ValueError(
                f"TokenComponents expects (..., {self.num_components}*{self.input_dim}={expected}) inputs, "
                f"got last dim {x.shape[-1]} (does model.encoder.num_components match?)"
            )
        return self.proj(self.dropout(x.unflatten(-1, (self.num_components, self.input_dim))))

    def extra_repr(self) -> str:
        return (
            f"num_components={self.num_components}, input_dim={self.input_dim}, output_dim={self.output_dim}"
        )
