"""Mixture-of-Logits (MoL) similarity (Ding & Zhai, "Retrieval with Learned Similarities", arXiv 2407.15462).

    phi(q, x) = sum_{i < P_Q, j < P_X} pi_{ij}(q, x) * <f_i(q), g_j(x)> / tau

with L2-normalised query components f (B, P_Q, d_P) and item components g (X, P_X, d_P), and gating
weights pi over the P = P_Q * P_X pairs (pair index p = i * P_X + j, query-major). See spec §1-2.

States (:mod:`rails.models.similarity.states`, the layout approximate top-k indexes rely on):
    query: ``MoLQueryState(components (B, P_Q, d_P) L2-normalised, gate (B, P) query-only gating part)``
    item:  ``MoLItemState(components (*L, P_X, d_P) L2-normalised, gate (*L, P) item-only gating part)``
Item-only parts are computed once in :meth:`MoLSimilarity.encode_items`; the query-item gating part needs the
pair logits (``score`` / ``score_pairs``); :meth:`MoLSimilarity.mixing` hands its weights to fused kernels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from rails.checks import require, require_at_least, require_positive, require_probability
from rails.models.encoders.base import OutputNorm
from rails.models.similarity.base import SimilarityHead, SimilarityOutput, l2_normalize
from rails.models.similarity.mol_components import (
    GLUActivation,
    QueryComponentMLP,
    UserIdComponents,
    check_component_args,
    default_item_components,
    default_query_components,
    mol_effective_init_,
    pair_logits,
)
from rails.models.similarity.mol_fused_mixing import choose_sampled_mixing, mixing_conflict
from rails.models.similarity.mol_gating import (
    GatingCombination,
    MoLGating,
    SoftmaxDropoutMixer,
    mutual_information_loss,
)
from rails.models.similarity.mol_sampled import forward_sampled
from rails.models.similarity.states import MoLItemState, MoLMixing, MoLQueryState

MixFn = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


class MoLSimilarity(SimilarityHead):
    """Mixture-of-Logits head behind the :class:`SimilarityHead` contract.

    Defaults are the paper's ML-1M settings except the user-id components (dataset-specific, off).

    Args:
        query_dim: D_q, width of the query (encoder) embedding.
        item_dim: D_x, width of the item embedding.
        num_query_components: P_Q, including the user-id components.
        num_item_components: P_X.
        component_dim: d_P.
        temperature: tau_MoL dividing every cosine logit (0.05).
        query_hidden_dim: GLU width of the query component MLP (512; <= 0: a single Linear).
        query_activation: "swiglu" (MovieLens) or "geglu" (Amazon Books).
        query_dropout: input dropout of the query component MLP (0.0).
        item_dropout: input dropout of the item projection (0.1).
        identity_components: component 0 of each side is the embedding itself: pair 0 is the dot head's
            cosine logit (an extension; see :class:`~rails.models.similarity.mol_components.WithIdentityComponent`).
        identity_gate_bias: added to pair 0's gate logit at initialisation (with identity components): > 0
            starts the mixture leaning on the dot head's logit (its weight then is learned).
        residual_components: each default component is the embedding plus its learned map, which starts at
            zero: every pair starts as the dot head's logit (an extension; needs component_dim = D_q = D_x).
        uid_hash_sizes: one user-id component per hash size H, row ``uid mod H + 1`` (ML-1M [6040], Books []).
        uid_dropout: element-wise dropout of the user-id components before L2 normalisation (0.5 ML-1M).
        gating_{query,item,qi}_hidden_dim: hidden widths of the query-only / item-only / query-item gating parts (128).
        gating_item_dropout / gating_qi_dropout: input dropout of the item-only / query-item gating parts (0.0).
        gating_combination: "glu_silu" (paper), "glu_silu_ln" or "none" (see :class:`MoLGating`).
        softmax_dropout: train-time dropout on pi, followed by renormalisation (0.2).
        eps: L2-normalisation and renormalisation epsilon (1e-6).
        autocast_bf16: run the head under bf16 autocast in training mode (the paper does for Amazon Books).
        eval_autocast_bf16: also in eval mode (evaluation, retrieval). Off by default: bf16 scores tie (a
            logit near 20 moves in steps of 0.125) and the evaluator ranks ties against the target.
        compile_mixing / fused_mixing: ``torch.compile`` the mixture / fused training kernels (mol_fused_mixing).
        max_score_elements: without autograd, ``score``/``score_pairs`` process items in chunks so that
            B * chunk * max(P, gating_qi_hidden_dim) stays below this many elements.
        sampled_checkpoint_columns: > 0: the training step scores [positive | negatives] this many columns at a
            time under activation checkpointing (memory for M x this many pairs; many negatives); 0: at once.
        query_components: optional replacement of the query MLP mapping (..., D_q) ->
            (..., P_Q - len(uid_hash_sizes), d_P) before L2 normalisation (e.g. LM token states).
        item_components: optional replacement of the item projection mapping (..., D_x) -> (..., P_X, d_P).
        loss_temperature: sampled-softmax temperature of the scores (1.0: they are already divided by tau).
        query_norm: encoder output normalisation MoL is trained with ("layer_norm" in every paper config).
        mi_loss_weight: weight of ``mi_loss`` in the training loss (0.001).
        uid_l2_weight: weight of ``uid_embedding_l2_norm`` (0.1; unused without user-id components).

    Initialisation (spec §1.9): the paper's *effective* one, :func:`mol_effective_init_` on the default modules;
    replacement component modules are left as given.

    Auxiliary losses (training mode only, from :meth:`forward`): ``mi_loss`` (spec §2.1, from the
    post-dropout pi) and, with user-id components, ``uid_embedding_l2_norm`` (spec §2.2); their weights
    are :attr:`aux_loss_weights`.
    """

    def __init__(
        self,
        query_dim: int,
        item_dim: int,
        num_query_components: int = 8,
        num_item_components: int = 4,
        component_dim: int = 64,
        temperature: float = 0.05,
        query_hidden_dim: int = 512,
        query_activation: GLUActivation = "swiglu",
        query_dropout: float = 0.0,
        item_dropout: float = 0.1,
        identity_components: bool = False,
        identity_gate_bias: float = 0.0,
        residual_components: bool = False,
        uid_hash_sizes: Sequence[int] = (),
        uid_dropout: float = 0.5,
        gating_query_hidden_dim: int = 128,
        gating_item_hidden_dim: int = 128,
        gating_qi_hidden_dim: int = 128,
        gating_item_dropout: float = 0.0,
        gating_qi_dropout: float = 0.0,
        gating_combination: GatingCombination = "glu_silu",
        softmax_dropout: float = 0.2,
        eps: float = 1e-6,
        autocast_bf16: bool = False,
        eval_autocast_bf16: bool = False,
        compile_mixing: bool = False,
        fused_mixing: bool = False,
        max_score_elements: int = 2**27,
        sampled_checkpoint_columns: int = 0,
        query_components: nn.Module | None = None,
        item_components: nn.Module | None = None,
        loss_temperature: float = 1.0,
        query_norm: OutputNorm = "layer_norm",
        mi_loss_weight: float = 1e-3,
        uid_l2_weight: float = 0.1,
    ) -> None:
        self.check_args(locals())
        super().__init__(loss_temperature=loss_temperature, query_norm=query_norm)
        uid_hash_sizes = [int(h) for h in uid_hash_sizes]
        self.query_dim = query_dim
        self.item_dim = item_dim
        self.mi_loss_weight = mi_loss_weight
        self.uid_l2_weight = uid_l2_weight
        self.num_query_components = num_query_components
        self.num_item_components = num_item_components
        self.component_dim = component_dim
        self.num_pairs = num_query_components * num_item_components
        self.temperature = temperature
        self.eps = eps
        self.autocast_bf16 = autocast_bf16
        self.eval_autocast_bf16 = eval_autocast_bf16
        self.max_score_elements = max_score_elements
        self.sampled_checkpoint_columns = sampled_checkpoint_columns
        self.num_encoder_components = num_query_components - len(uid_hash_sizes)

        defaults = nn.ModuleList()
        if query_components is None:
            query_components = default_query_components(
                query_dim,
                self.num_encoder_components,
                component_dim,
                identity_components,
                hidden_dim=query_hidden_dim,
                activation=query_activation,
                dropout=query_dropout,
                residual=residual_components,
            )
            defaults.append(query_components)
        if item_components is None:
            item_components = default_item_components(
                item_dim,
                num_item_components,
                component_dim,
                item_dropout,
                identity_components,
                residual_components,
            )
            defaults.append(item_components)
        self.query_components = query_components
        self.item_components = item_components
        self.uid_components = (
            UserIdComponents(uid_hash_sizes, component_dim, uid_dropout) if uid_hash_sizes else None
        )
        self.gating = MoLGating(
            query_dim,
            item_dim,
            self.num_pairs,
            gating_query_hidden_dim,
            gating_item_hidden_dim,
            gating_qi_hidden_dim,
            gating_item_dropout,
            gating_qi_dropout,
            gating_combination,
        )
        self.mixer = SoftmaxDropoutMixer(softmax_dropout, eps)
        self._qi_hidden_dim = gating_qi_hidden_dim

        keep_bias = [m.output_layer for m in defaults.modules() if isinstance(m, QueryComponentMLP)]
        for module in [*defaults, self.gating]:
            mol_effective_init_(module, keep_default_bias=keep_bias)
        if self.uid_components is not None:
            mol_effective_init_(self.uid_components)
        self.gating.bias_pair_(0, identity_gate_bias)  # after the init, which zeroes the gating's 1-D biases
        self._mix_fn: MixFn = torch.compile(self._mix) if compile_mixing else self._mix
        self._sampled_mix_fn = choose_sampled_mixing(compile_mixing, fused_mixing)

    @staticmethod
    def check_args(args: Mapping[str, Any]) -> None:
        """Argument rules (see :func:`rails.config.check_config`)."""
        dims = ("query_dim", "item_dim", "num_query_components", "num_item_components", "component_dim")
        require_at_least(args, 1, *dims, "max_score_elements")
        require_positive(args, "temperature")
        require_at_least(args, 0, "mi_loss_weight", "uid_l2_weight")
        require_probability(args, "query_dropout", "item_dropout", "uid_dropout", "softmax_dropout")
        require_probability(args, "gating_item_dropout", "gating_qi_dropout")
        require_at_least(args, 0, "sampled_checkpoint_columns")
        require(not mixing_conflict(args), "fused_mixing", True, "excludes compile_mixing=true: choose one")
        check_component_args(args)
        SimilarityHead.check_recipe(args)

    aux_loss_names = ("mi_loss", "uid_embedding_l2_norm")

    @property
    def aux_loss_weights(self) -> dict[str, float]:
        """``{"mi_loss": mi_loss_weight}``, plus ``uid_embedding_l2_norm`` with user-id components."""
        weights = {"mi_loss": self.mi_loss_weight}
        if self.uid_components is not None:
            weights["uid_embedding_l2_norm"] = self.uid_l2_weight
        return weights

    # ------------------------------------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def _precision(self, x: Tensor) -> Iterator[None]:
        if self.autocast_bf16 and (self.training or self.eval_autocast_bf16):
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                yield
        else:
            yield

    def _check_components(self, components: Tensor, lead: tuple[int, ...], count: int, side: str) -> None:
        expected = (*lead, count, self.component_dim)
        if tuple(components.shape) != expected:
            raise ValueError(
                f"model.similarity.{side}_components must return (..., {count}, {self.component_dim}) "
                f"components, got shape {tuple(components.shape)} for input leading dims {lead}"
            )

    def _query_inputs(
        self, query_embeddings: Tensor, user_ids: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(B, P_Q - n_uid, d_P) MLP components, (B, n_uid, d_P) pre-dropout uid vectors, (B,) their norms²."""
        if query_embeddings.dim() != 2:
            raise ValueError(f"query_embeddings must be (B, D_q), got shape {tuple(query_embeddings.shape)}")
        lead = tuple(query_embeddings.shape[:-1])
        components = self.query_components(query_embeddings)
        self._check_components(components, lead, self.num_encoder_components, "query")
        if self.uid_components is None:
            return components, None, None
        if user_ids is None:
            raise ValueError(
                "MoLSimilarity with model.similarity.uid_hash_sizes needs user_ids (B,) in the query context"
            )
        if user_ids.shape != lead:
            raise ValueError(f"user_ids must have shape {lead}, got {tuple(user_ids.shape)}")
        uid, squared_norms = self.uid_components.lookup(user_ids)
        return components, uid, squared_norms

    def _query_components(self, components: Tensor, uid: Tensor | None) -> Tensor:
        """(B, P_Q, d_P) L2-normalised query components; the uid dropout is drawn here (training)."""
        if uid is not None and self.uid_components is not None:
            components = torch.cat(
                [components, self.uid_components.dropout(uid).to(components.dtype)], dim=-2
            )
        return l2_normalize(components, self.eps)

    def _encode_queries(
        self, query_embeddings: Tensor, user_ids: Tensor | None
    ) -> tuple[MoLQueryState, Tensor | None]:
        """Query state and, with user-id components, the (B,) pre-dropout squared uid norms."""
        components, uid, squared_norms = self._query_inputs(query_embeddings, user_ids)
        state = MoLQueryState(
            self._query_components(components, uid), self.gating.query_gate(query_embeddings)
        )
        return state, squared_norms

    def _mix(
        self, query_components: Tensor, query_gate: Tensor, item_components: Tensor, item_gate: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Scores (B, X) and gating weights (B, X, P) from states (items (X, ...) or (B, X, ...))."""
        logits = pair_logits(query_components, item_components, self.temperature)
        return self._mix_logits(query_gate, item_gate, logits)

    def _mix_logits(self, query_gate: Tensor, item_gate: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Scores (B, X) and weights (B, X, P) from the gating parts (B, P), (1|B, X, P) and logits (B, X, P)."""
        gate_logits = self.gating(query_gate[:, None, :], item_gate.to(logits.dtype), logits)
        weights = self.mixer(gate_logits)
        scores = (weights.to(logits.dtype) * logits).sum(dim=-1)
        return scores, weights

    def _chunked_scores(self, query_state: MoLQueryState, item_state: MoLItemState, pairwise: bool) -> Tensor:
        num_items = item_state.lead_shape[-1]
        batch = len(query_state)
        per_item = batch * max(self.num_pairs, self._qi_hidden_dim)
        chunk = num_items if torch.is_grad_enabled() else max(1, self.max_score_elements // max(per_item, 1))
        parts = []
        for start in range(0, max(num_items, 1), chunk):
            items = slice(start, min(start + chunk, num_items))
            part = item_state.index((slice(None), items) if pairwise else items)
            scores, _ = self._mix_fn(query_state.components, query_state.gate, part.components, part.gate)
            parts.append(scores)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    # ----------------------------------------------------------------------------------------- contract
    def encode_queries(self, query_embeddings: Tensor, **ctx: Tensor) -> MoLQueryState:
        """(B, D_q) queries (+ ``user_ids`` (B,)) -> ``MoLQueryState((B, P_Q, d_P), (B, P))``."""
        with self._precision(query_embeddings):
            state, _ = self._encode_queries(query_embeddings, ctx.get("user_ids"))
        return state

    def encode_items(self, item_embeddings: Tensor) -> MoLItemState:
        """(*L, D_x) items -> ``MoLItemState((*L, P_X, d_P), (*L, P))``."""
        with self._precision(item_embeddings):
            lead = tuple(item_embeddings.shape[:-1])
            components = self.item_components(item_embeddings)
            self._check_components(components, lead, self.num_item_components, "item")
            return MoLItemState(l2_normalize(components, self.eps), self.gating.item_gate(item_embeddings))

    def score(self, query_state: MoLQueryState, item_state: MoLItemState) -> Tensor:  # type: ignore[override]
        """Query state (B, ...) x item state (X, ...) -> (B, X) MoL scores."""
        with self._precision(query_state.components):
            return self._chunked_scores(query_state, item_state, pairwise=False)

    def score_pairs(self, query_state: MoLQueryState, item_state: MoLItemState) -> Tensor:  # type: ignore[override]
        """Query state (B, ...) x per-query item state (B, X, ...) -> (B, X) MoL scores."""
        with self._precision(query_state.components):
            return self._chunked_scores(query_state, item_state, pairwise=True)

    def mixing(self) -> MoLMixing:
        """The mixture step's parameters as detached tensors and numbers (for fused kernels)."""
        hidden, out = self.gating.qi_part[1], self.gating.qi_part[3]
        return MoLMixing(
            temperature=float(self.temperature),
            combination=self.gating.combination,
            num_query_components=self.num_query_components,
            num_item_components=self.num_item_components,
            qi_hidden_weight=hidden.weight.detach(),
            qi_hidden_bias=None if hidden.bias is None else hidden.bias.detach(),
            qi_out_weight=out.weight.detach(),
            qi_out_bias=None if out.bias is None else out.bias.detach(),
            training=self.training,
        )

    def forward(self, query_embeddings: Tensor, item_embeddings: Tensor, **ctx: Tensor) -> SimilarityOutput:
        """(B, D_q) x (X, D_x) | (B, X, D_x) -> SimilarityOutput((B, X), aux losses in training)."""
        if item_embeddings.dim() not in (2, 3):
            raise ValueError(
                f"item_embeddings must be (X, D) or (B, X, D), got shape {tuple(item_embeddings.shape)}"
            )
        with self._precision(query_embeddings):
            item_state = self.encode_items(item_embeddings)
        return self.forward_state(query_embeddings, item_state, **ctx)

    def forward_state(  # type: ignore[override]
        self, query_embeddings: Tensor, item_state: MoLItemState, **ctx: Tensor
    ) -> SimilarityOutput:
        """Training path from a precomputed item state ((X, ...) shared or (B, X, ...) per query).

        Lets a caller encode each distinct sampled item once (``encode_items`` on unique ids, then
        ``item_state.gather``) instead of once per occurrence; scores and aux losses are as in :meth:`forward`.
        """
        with self._precision(query_embeddings):
            query_state, squared_uid_norms = self._encode_queries(query_embeddings, ctx.get("user_ids"))
            scores, weights = self._mix_fn(
                query_state.components, query_state.gate, item_state.components, item_state.gate
            )
        aux: dict[str, Tensor] = {}
        if self.training:
            aux["mi_loss"] = mutual_information_loss(weights, self.eps)
            if squared_uid_norms is not None:
                aux["uid_embedding_l2_norm"] = squared_uid_norms.float().mean()
        return SimilarityOutput(scores, aux)

    def forward_sampled(
        self, query_embeddings: Tensor, item_embeddings: Tensor, positions: Tensor, **ctx: Tensor
    ) -> SimilarityOutput:
        """(M, D_q) x (T, D_x) table x (M, 1 + R) positions -> (M, 1 + R) scores, aux of column 0 (mol_sampled)."""
        return forward_sampled(self, query_embeddings, item_embeddings, positions, ctx.get("user_ids"))

    def extra_repr(self) -> str:
        uid = self.uid_components.hash_sizes if self.uid_components is not None else []
        shape = f"{self.num_query_components}x{self.num_item_components}x{self.component_dim}"
        return (
            f"{shape}, temperature={self.temperature}, uid_hash_sizes={uid}, loss_temperature="
            f"{self.loss_temperature}, query_norm={self.query_norm}, aux_loss_weights={self.aux_loss_weights}"
        )
