"""A MoL head that ranks by its scores blended with the cosine of the embeddings it reads.

A MoL model trained with the dot head's loss beside its own (``model.dot_loss_weight`` > 0,
:class:`rails.models.losses.dot_auxiliary.DotAuxiliaryLoss`) holds two scorers over the same encoder outputs
and item table: MoL, and ``cos(query, item) / tau``, which that loss trains. This head trains exactly as MoL
(its training path is MoL's, the dot loss trains the cosine) and ranks, at validation, test and retrieval, by

``score = mol_weight * MoL(q, x) + cosine_weight * cos(q, x) / cosine_temperature``

(the cosine of the raw embeddings, L2-normalised as the loss normalises them). On Beauty and ML-1M checkpoints
this blend ranked better than either scorer alone (round 22, results/studies/2026-12-02-h200-round22-cosine.md).
Two ways in, both with the same weights and ``similarity.*`` keys (the state dict loads unchanged):

- training: ``model/similarity_blend=cosine model.dot_loss_weight=1.0`` (conf/model/similarity_blend/cosine.yaml
  on top of any MoL head; checkpoints are then selected by the blend's validation metric);
- a trained MoL checkpoint, as a probe::

    rails-eval ckpt_path=<run>/checkpoints/epoch_029.ckpt \\
      +model_overrides.similarity._target_=rails.models.similarity.mol_cosine.MoLWithCosine \\
      +model_overrides.similarity.mol_weight=0.0    # the cosine alone (cosine_weight 1.0: MoL + cosine)

A blend needs the dot loss (``model.dot_loss_weight`` > 0, :func:`cosine_weight_of` lets the model check it),
and ``cosine_temperature`` should be the run's ``model.dot_loss_temperature`` (the config interpolates it). The
fused exact MoL kernel does not apply to it (it scores MoL alone; exact search falls back to chunked scoring),
and approximate indexes pick their candidates from the MoL states and re-score them with the blend.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from rails.checks import require, require_at_least, require_positive
from rails.models.similarity.base import l2_normalize
from rails.models.similarity.mol import MoLSimilarity
from rails.models.similarity.states import MoLItemState, MoLQueryState

BLEND_DEFAULTS: dict[str, float] = {"mol_weight": 1.0, "cosine_weight": 1.0, "cosine_temperature": 0.05}


def cosine_weight_of(similarity: Any) -> float:
    """The cosine weight a head (config mapping or built object) ranks with: 0.0 unless it is a MoLWithCosine."""
    if isinstance(similarity, Mapping):
        if not str(similarity.get("_target_", "")).endswith(f".{MoLWithCosine.__name__}"):
            return 0.0
        return float(similarity.get("cosine_weight", BLEND_DEFAULTS["cosine_weight"]))
    return float(similarity.cosine_weight) if isinstance(similarity, MoLWithCosine) else 0.0


@dataclass(frozen=True, eq=False)
class CosineMoLQueryState(MoLQueryState):
    """MoL query state plus ``unit`` (B, D_q): the L2-normalised query embeddings."""

    unit: Tensor
    trailing_dims: ClassVar[dict[str, int]] = {"components": 2, "gate": 1, "unit": 1}


@dataclass(frozen=True, eq=False)
class CosineMoLItemState(MoLItemState):
    """MoL item state plus ``unit`` (*L, D_x): the L2-normalised item embeddings."""

    unit: Tensor
    trailing_dims: ClassVar[dict[str, int]] = {"components": 2, "gate": 1, "unit": 1}


class MoLWithCosine(MoLSimilarity):
    """MoL head whose ranking scores add ``cosine_weight * cos(q, x) / cosine_temperature`` (training as MoL).

    Args:
        mol_weight: weight of the MoL score (>= 0; 0: the cosine alone ranks).
        cosine_weight: weight of the cosine logit (>= 0; not both weights 0).
        cosine_temperature: tau dividing the cosine (> 0; the run's ``model.dot_loss_temperature``).
        *args, **kwargs: :class:`MoLSimilarity`'s arguments (the checkpoint's ``model.similarity`` node).
    """

    def __init__(
        self,
        *args: Any,
        mol_weight: float = BLEND_DEFAULTS["mol_weight"],
        cosine_weight: float = BLEND_DEFAULTS["cosine_weight"],
        cosine_temperature: float = BLEND_DEFAULTS["cosine_temperature"],
        **kwargs: Any,
    ) -> None:
        blend = {
            "mol_weight": mol_weight,
            "cosine_weight": cosine_weight,
            "cosine_temperature": cosine_temperature,
        }
        self._check_blend(blend)
        super().__init__(*args, **kwargs)
        self.mol_weight = float(mol_weight)
        self.cosine_weight = float(cosine_weight)
        self.cosine_temperature = float(cosine_temperature)

    @staticmethod
    def _check_blend(args: Mapping[str, Any]) -> None:
        require_at_least(args, 0, "mol_weight", "cosine_weight")
        require_positive(args, "cosine_temperature")
        require(
            args["mol_weight"] + args["cosine_weight"] > 0,
            "cosine_weight",
            args["cosine_weight"],
            "must be > 0 when mol_weight is 0 (else nothing scores)",
        )

    @staticmethod
    def check_args(args: Mapping[str, Any]) -> None:
        """The blend's rules, then :meth:`MoLSimilarity.check_args` over MoL's defaults and the other keys."""
        mol_parameters = inspect.signature(MoLSimilarity).parameters
        mol_keys = {*mol_parameters, *BLEND_DEFAULTS, "self"}  # "self": the constructor's own arguments
        foreign = sorted(key for key in args if key not in mol_keys and not key.startswith("_"))
        require(
            not foreign,
            "_target_",
            args.get("_target_", MoLWithCosine.__name__),
            f"blends a MoL head's scores, but keys {foreign} are not MoL's: "
            "model/similarity_blend=cosine needs model/similarity=mol*",
        )
        MoLWithCosine._check_blend(
            {**BLEND_DEFAULTS, **{k: v for k, v in args.items() if k in BLEND_DEFAULTS}}
        )
        query_dim, item_dim = args.get("query_dim"), args.get("item_dim")
        require(
            query_dim == item_dim,
            "item_dim",
            item_dim,
            f"must equal query_dim ({query_dim}): the cosine compares the embeddings",
        )
        mol_defaults = {
            name: p.default for name, p in mol_parameters.items() if p.default is not inspect.Parameter.empty
        }
        MoLSimilarity.check_args(
            {**mol_defaults, **{k: v for k, v in args.items() if k not in BLEND_DEFAULTS}}
        )

    def encode_queries(self, query_embeddings: Tensor, **ctx: Tensor) -> CosineMoLQueryState:
        """(B, D_q) queries -> MoL query state + their unit vectors."""
        state = super().encode_queries(query_embeddings, **ctx)
        return CosineMoLQueryState(**state.tensors(), unit=l2_normalize(query_embeddings, self.eps))

    def encode_items(self, item_embeddings: Tensor) -> CosineMoLItemState:
        """(*L, D_x) items -> MoL item state + their unit vectors."""
        state = super().encode_items(item_embeddings)
        return CosineMoLItemState(**state.tensors(), unit=l2_normalize(item_embeddings, self.eps))

    def _blend(self, mol: Tensor | None, cosine: Tensor) -> Tensor:
        logits = cosine.float() * (self.cosine_weight / self.cosine_temperature)
        return logits if mol is None else self.mol_weight * mol + logits

    def score(self, query_state: CosineMoLQueryState, item_state: CosineMoLItemState) -> Tensor:  # type: ignore[override]
        """(B, ...) x (X, ...) -> (B, X) blended scores (MoL skipped when ``mol_weight`` is 0)."""
        mol = super().score(query_state, item_state) if self.mol_weight > 0 else None
        return self._blend(mol, query_state.unit @ item_state.unit.to(query_state.unit.dtype).T)

    def score_pairs(self, query_state: CosineMoLQueryState, item_state: CosineMoLItemState) -> Tensor:  # type: ignore[override]
        """(B, ...) x per-query (B, X, ...) -> (B, X) blended scores."""
        mol = super().score_pairs(query_state, item_state) if self.mol_weight > 0 else None
        items = item_state.unit.to(query_state.unit.dtype)
        return self._blend(mol, (items @ query_state.unit[:, :, None]).squeeze(-1))

    def extra_repr(self) -> str:
        blend = (
            f"mol_weight={self.mol_weight}, cosine_weight={self.cosine_weight}, tau={self.cosine_temperature}"
        )
        return f"{super().extra_repr()}, {blend}" if super().extra_repr() else blend
