"""Component functions of the Mixture-of-Logits head (spec §1.3, §1.4).

A component function maps an embedding ``(..., D_in)`` to ``(..., P, d_P)`` un-normalised component
embeddings; :class:`rails.models.similarity.mol.MoLSimilarity` L2-normalises them. Any ``nn.Module`` with
that contract can replace the defaults below (e.g. LM token states reshaped to P components).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from rails.checks import require

GLUActivation = Literal["swiglu", "geglu"]


class GLU(nn.Module):
    """Gated linear unit ``act(lhs) * rhs`` with ``[lhs | rhs] = x W + b`` (SwiGLU: SiLU, GeGLU: erf GELU).

    The weight is (in, 2*out) and the bias (1, 2*out), as in the reference implementation; the 2-D bias
    is therefore re-initialised by the xavier-normal pass of :func:`mol_effective_init_`.

    Args:
        in_dim: input width.
        out_dim: output width.
        activation: "swiglu" or "geglu".
    """

    def __init__(self, in_dim: int, out_dim: int, activation: GLUActivation = "swiglu") -> None:
        super().__init__()
        if activation not in ("swiglu", "geglu"):
            raise ValueError(f"query_activation must be 'swiglu' or 'geglu', got {activation!r}")
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(in_dim, 2 * out_dim).normal_(0.0, 0.02))
        self.bias = nn.Parameter(torch.zeros(1, 2 * out_dim))

    def forward(self, x: Tensor) -> Tensor:
        """(..., in) -> (..., out)."""
        lhs, rhs = (x @ self.weight + self.bias).chunk(2, dim=-1)
        gate = nn.functional.silu(lhs) if self.activation == "swiglu" else nn.functional.gelu(lhs)
        return gate * rhs

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]} -> {self.weight.shape[1] // 2}, {self.activation}"


class QueryComponentMLP(nn.Module):
    """Default query component function: Dropout -> GLU(D -> hidden) -> Linear(hidden -> P*d_P).

    With ``hidden_dim <= 0``: Dropout -> Linear(D -> P*d_P). With ``residual`` every component is the input
    plus that map's output, ``f_i(q) = q + MLP(q)_i`` (needs d_P = D); :func:`mol_effective_init_` zeroes the
    output Linear, so each component starts as the query itself.

    Args:
        in_dim: D_q.
        num_components: P (the encoder-derived query components, P_Q minus user-id components).
        component_dim: d_P.
        hidden_dim: GLU width (512 in every paper config).
        activation: "swiglu" (MovieLens) or "geglu" (Amazon Books).
        dropout: input dropout (0.0 in the paper).
        residual: add the input to every component (an extension: components start at the dot head's).
    """

    def __init__(
        self,
        in_dim: int,
        num_components: int,
        component_dim: int,
        hidden_dim: int = 512,
        activation: GLUActivation = "swiglu",
        dropout: float = 0.0,
        residual: bool = False,
    ) -> None:
        super().__init__()
        _check_residual(residual, in_dim, component_dim)
        self.num_components = num_components
        self.component_dim = component_dim
        self.residual = residual
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden_dim > 0:
            layers += [
                GLU(in_dim, hidden_dim, activation),
                nn.Linear(hidden_dim, num_components * component_dim),
            ]
        else:
            layers.append(nn.Linear(in_dim, num_components * component_dim))
        self.net = nn.Sequential(*layers)

    @property
    def output_layer(self) -> nn.Linear:
        return self.net[-1]  # type: ignore[return-value]

    def forward(self, x: Tensor) -> Tensor:
        """(..., D_q) -> (..., P, d_P)."""
        out = self.net(x).unflatten(-1, (self.num_components, self.component_dim))
        return out + x.unsqueeze(-2).to(out.dtype) if self.residual else out


class ItemComponentProjection(nn.Module):
    """Default item component function: Dropout -> Linear(D_x -> P_X*d_P) (spec §1.4, item_hidden_dim = -1).

    With ``residual``: ``g_j(x) = x + W_j x' + b_j`` (x' = dropout(x), the skip without dropout; needs
    d_P = D_x); :func:`mol_effective_init_` zeroes W and b, so each component starts as the item embedding.

    Args:
        in_dim: D_x.
        num_components: P_X.
        component_dim: d_P.
        dropout: input dropout (0.1 in every paper config).
        residual: add the (undropped) input to every component.
    """

    def __init__(
        self,
        in_dim: int,
        num_components: int,
        component_dim: int,
        dropout: float = 0.1,
        residual: bool = False,
    ) -> None:
        super().__init__()
        _check_residual(residual, in_dim, component_dim)
        self.num_components = num_components
        self.component_dim = component_dim
        self.residual = residual
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(in_dim, num_components * component_dim)

    @property
    def output_layer(self) -> nn.Linear:
        return self.proj

    def forward(self, x: Tensor) -> Tensor:
        """(..., D_x) -> (..., P_X, d_P)."""
        out = self.proj(self.dropout(x)).unflatten(-1, (self.num_components, self.component_dim))
        return out + x.unsqueeze(-2).to(out.dtype) if self.residual else out


def _check_residual(residual: bool, in_dim: int, component_dim: int) -> None:
    if residual and in_dim != component_dim:
        raise ValueError(
            f"model.similarity.residual_components needs component_dim = the input width, got component_dim="
            f"{component_dim} for inputs of width {in_dim}"
        )


class WithIdentityComponent(nn.Module):
    """Component 0 is the input embedding itself, components 1.. come from ``rest`` (spec §1 extension).

    With L2-normalised components the pair (query component 0, item component 0) is the cosine of the
    query and item embeddings, i.e. the dot-product head's logit, so the mixture can fall back on it (its
    item side gets no dropout and no projection: the item table receives the dot head's gradient).

    Args:
        dim: the input width, which must equal d_P.
        rest: component function for the other components ((..., dim) -> (..., P - 1, dim)); None when P = 1.
    """

    def __init__(self, dim: int, rest: nn.Module | None) -> None:
        super().__init__()
        self.dim = dim
        self.rest = rest

    def forward(self, x: Tensor) -> Tensor:
        """(..., d_P) -> (..., P, d_P) with ``[..., 0, :] = x``."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"identity component expects inputs of width {self.dim}, got {tuple(x.shape)}")
        identity = x.unsqueeze(-2)
        if self.rest is None:
            return identity
        others = self.rest(x)
        return torch.cat([identity.to(others.dtype), others], dim=-2)


def learned_components(components: nn.Module) -> tuple[nn.Module | None, bool]:
    """The learned part of a component module and whether an identity component 0 precedes it
    (:class:`WithIdentityComponent`: its ``rest``, None when that is the only component)."""
    if isinstance(components, WithIdentityComponent):
        return components.rest, True
    return components, False


def check_component_args(args: Mapping[str, Any]) -> None:
    """Rules of MoLSimilarity's component arguments: at least one query component from the encoder; with
    ``identity_components`` or ``residual_components`` d_P = D_q = D_x and the default component functions;
    ``identity_gate_bias`` only with identity components."""
    uid, components = list(args["uid_hash_sizes"]), args["num_query_components"]
    require(
        len(uid) < components,
        "uid_hash_sizes",
        uid,
        f"has {len(uid)} tables but num_query_components={components}: at least one component must "
        "come from the query",
    )
    bias = args["identity_gate_bias"]
    require(
        bias == 0 or args["identity_components"], "identity_gate_bias", bias, "needs identity_components=true"
    )
    for key in ("identity_components", "residual_components"):
        if not args.get(key, False):
            continue
        widths = {k: args[k] for k in ("component_dim", "query_dim", "item_dim")}
        require(len(set(widths.values())) == 1, key, True, f"needs equal widths, got {widths}")
        replaced = [k for k in ("query_components", "item_components") if args[k] is not None]
        require(not replaced, key, True, f"needs the default component functions, got {replaced}")


def default_query_components(
    query_dim: int, num_components: int, component_dim: int, identity: bool, **mlp_kwargs: object
) -> nn.Module:
    """:class:`QueryComponentMLP` for ``num_components``, or for all but component 0 behind
    :class:`WithIdentityComponent` (``identity``; needs ``query_dim == component_dim``).

    ``mlp_kwargs``: ``hidden_dim``, ``activation``, ``dropout``, ``residual`` of :class:`QueryComponentMLP`.
    """
    count = num_components - int(identity)
    mlp = QueryComponentMLP(query_dim, count, component_dim, **mlp_kwargs) if count else None  # type: ignore[arg-type]
    if identity:
        return WithIdentityComponent(query_dim, mlp)
    assert mlp is not None
    return mlp


def default_item_components(
    item_dim: int,
    num_components: int,
    component_dim: int,
    dropout: float,
    identity: bool,
    residual: bool = False,
) -> nn.Module:
    """:class:`ItemComponentProjection` for ``num_components``, or for all but component 0 behind
    :class:`WithIdentityComponent` (``identity``; needs ``item_dim == component_dim``); ``residual`` as there."""
    count = num_components - int(identity)
    proj = ItemComponentProjection(item_dim, count, component_dim, dropout, residual) if count else None
    if identity:
        return WithIdentityComponent(item_dim, proj)
    assert proj is not None
    return proj


class UserIdComponents(nn.Module):
    """Hashed user-id embeddings, one extra query component per hash table (spec §1.3 "uid embeddings").

    Table t has H_t + 1 rows (row 0 = padding, never indexed); user u uses row ``u mod H_t + 1``.
    In training, element-wise dropout is applied (before the head's L2 normalisation) and the
    squared L2 norm of the pre-dropout vectors is returned for the ``uid_embedding_l2_norm`` loss.

    Args:
        hash_sizes: H per table (ML-1M: [6040], ML-20M: [16384]).
        component_dim: d_P.
        dropout: element-wise dropout rate (0.5 ML-1M, 0.8 ML-20M).
    """

    def __init__(self, hash_sizes: Sequence[int], component_dim: int, dropout: float = 0.5) -> None:
        super().__init__()
        hash_sizes = [int(h) for h in hash_sizes]
        if any(h < 1 for h in hash_sizes):
            raise ValueError(f"model.similarity.uid_hash_sizes must be positive, got {hash_sizes}")
        self.hash_sizes = hash_sizes
        self.tables = nn.ModuleList(nn.Embedding(h + 1, component_dim, padding_idx=0) for h in hash_sizes)
        self.dropout = nn.Dropout(dropout)

    def __len__(self) -> int:
        return len(self.tables)

    def rows(self, user_ids: Tensor, table: int) -> Tensor:
        """(B,) int64 user ids -> (B,) row indices ``uid mod H + 1`` of table ``table``."""
        return torch.remainder(user_ids, self.hash_sizes[table]) + 1

    def lookup(self, user_ids: Tensor) -> tuple[Tensor, Tensor]:
        """(B,) user ids -> ((B, n_tables, d_P) components before dropout, (B,) their squared norms).

        The sampled-softmax training path draws the dropout of these vectors once per column group
        (positive, negatives), as two head calls would.
        """
        vectors = torch.stack(
            [table(self.rows(user_ids, t)) for t, table in enumerate(self.tables)], dim=-2
        )  # (B, n_tables, d_P)
        return vectors, vectors.pow(2).sum(dim=(-1, -2))

    def forward(self, user_ids: Tensor) -> tuple[Tensor, Tensor]:
        """(B,) user ids -> ((B, n_tables, d_P) components after dropout, (B,) pre-dropout squared norms)."""
        vectors, squared_norms = self.lookup(user_ids)
        return self.dropout(vectors), squared_norms

    def extra_repr(self) -> str:
        return f"hash_sizes={self.hash_sizes}"


def pair_logits(query_components: Tensor, item_components: Tensor, temperature: float) -> Tensor:
    """Temperature-scaled pair logits (B, X, P), pair p = i * P_X + j, of L2-normalised components.

    Args:
        query_components: (B, P_Q, d_P).
        item_components: (X, P_X, d_P) shared by every query or (B, X, P_X, d_P) per query; cast to the
            queries' dtype.
        temperature: tau_MoL.
    """
    pattern = "bid,bxjd->bxij" if item_components.dim() == 4 else "bid,xjd->bxij"
    logits = torch.einsum(pattern, query_components, item_components.to(query_components.dtype))
    return logits.flatten(-2) / temperature


def mol_effective_init_(module: nn.Module, keep_default_bias: Sequence[nn.Linear] = ()) -> None:
    """The paper's *effective* initialisation of the MoL modules (spec §1.9).

    Every parameter with >= 2 dims (Linear weights, GLU weight and its (1, 2*out) bias, user-id tables
    including the padding row) gets xavier_normal_ (gain 1); 1-D biases are zeroed (other 1-D parameters,
    e.g. LayerNorm scales, are left alone) except those of the
    Linears in ``keep_default_bias`` (the query output Linear keeps PyTorch's U(+-1/sqrt(fan_in))).
    This mirrors the reference builder followed by the encoder's xavier-normal re-initialisation pass.
    Residual component functions (``residual=True``) then get a zero output Linear: components = the input.
    """
    kept = {id(layer.bias) for layer in keep_default_bias if layer.bias is not None}
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.dim() >= 2:
                nn.init.xavier_normal_(param)
            elif name.endswith("bias") and id(param) not in kept:
                param.zero_()
        for part in module.modules():
            if isinstance(part, (QueryComponentMLP, ItemComponentProjection)) and part.residual:
                part.output_layer.weight.zero_()
                if part.output_layer.bias is not None:
                    part.output_layer.bias.zero_()
