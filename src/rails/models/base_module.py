"""LearnedSimilarityModule: the LightningModule base shared by the sequential and the text retrieval modules."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from rails.checks import require, require_at_least, require_positive
from rails.models.losses.dot_auxiliary import DotAuxiliaryLoss
from rails.models.losses.sampled_softmax import SampledSoftmaxLoss
from rails.models.similarity.base import SimilarityHead
from rails.models.similarity.mol_cosine import cosine_weight_of

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


def check_aux_loss_weights(weights: Mapping[str, Any] | None) -> None:
    """``aux_loss_weights`` maps loss names to weights >= 0 (argument rule shared by the modules)."""
    for name, weight in (weights or {}).items():
        valid = isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight >= 0
        require(valid, f"aux_loss_weights.{name}", weight, "must be a number >= 0")


def check_dot_loss(args: Mapping[str, Any]) -> None:
    """``dot_loss_weight`` >= 0 and ``dot_loss_temperature`` > 0 (defaults for configs that predate them); a head
    that ranks with the cosine (:class:`~rails.models.similarity.mol_cosine.MoLWithCosine`) needs that loss."""
    given = {"dot_loss_weight": 0.0, "dot_loss_temperature": 0.05, **args}
    require_at_least(given, 0, "dot_loss_weight")
    require_positive(given, "dot_loss_temperature")
    cosine_weight = cosine_weight_of(given.get("similarity"))
    require(
        cosine_weight == 0 or given["dot_loss_weight"] > 0,
        "dot_loss_weight",
        given["dot_loss_weight"],
        f"must be > 0 when the head ranks with the cosine (similarity.cosine_weight={cosine_weight}): "
        "the dot loss is what trains that cosine",
    )


def resolve_aux_loss_weights(head: SimilarityHead, overrides: Mapping[str, float] | None) -> dict[str, float]:
    """The weight of each auxiliary loss ``head`` returns: its own ``aux_loss_weights``, replaced by name by
    ``overrides``. An override for a loss the head class knows but this instance does not return (MoL's
    ``uid_embedding_l2_norm`` without user-id components) has no effect.

    Raises:
        ValueError: when ``overrides`` names a loss the head class never returns (e.g. a misspelt name).
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(head.aux_loss_names))
    if unknown:
        raise ValueError(
            f"aux_loss_weights={overrides}: {unknown} is not an auxiliary loss of {type(head).__name__} "
            f"(its losses: {list(head.aux_loss_names) or 'none'})"
        )
    weights = dict(head.aux_loss_weights)
    weights.update({name: float(value) for name, value in overrides.items() if name in weights})
    return weights


class LearnedSimilarityModule(L.LightningModule):
    """What every rails LightningModule shares: optimizer/scheduler factories, the similarity head's training
    recipe, weighted auxiliary losses and the resolved run config stored in checkpoints (``rails_config``,
    read by ``rails-eval``).

    Subclasses register ``self.similarity`` (a :class:`SimilarityHead`) and ``self.loss`` (a
    :class:`SampledSoftmaxLoss`), then call :meth:`adopt_head_recipe`.

    Args:
        optimizer: partial optimizer, called with the parameters.
        scheduler: optional partial LR scheduler, stepped every optimizer step.
        head_weight_decay: weight decay of the similarity head's parameters in a parameter group of their own
            (None: one group, the optimizer's own weight decay for every parameter). A regulariser of the head
            alone, e.g. for a MoL head that over-fits a small dataset while the encoder and item table do not.
        dot_loss_weight: weight of an auxiliary dot-product loss (:class:`DotAuxiliaryLoss`: the sampled
            softmax of cos(query, raw item embedding) on the head's positives, negatives and collisions), logged
            as ``train/aux/dot_loss``; 0 computes nothing. The head alone ranks at evaluation.
        dot_loss_temperature: tau of that loss's cosine logits. Subclasses check both in their ``check_args``
            (:func:`check_dot_loss`, which the config check also runs).
    """

    similarity: SimilarityHead
    loss: SampledSoftmaxLoss

    def __init__(
        self,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        head_weight_decay: float | None = None,
        dot_loss_weight: float = 0.0,
        dot_loss_temperature: float = 0.05,
    ) -> None:
        super().__init__()
        require(
            head_weight_decay is None
            or (
                isinstance(head_weight_decay, (int, float))
                and not isinstance(head_weight_decay, bool)
                and head_weight_decay >= 0
            ),
            "head_weight_decay",
            head_weight_decay,
            "must be null or a number >= 0",
        )
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.head_weight_decay = head_weight_decay
        self.aux_loss_weights: dict[str, float] = {}
        self.dot_loss_weight = float(dot_loss_weight)
        self.dot_loss = DotAuxiliaryLoss(dot_loss_temperature) if dot_loss_weight > 0 else None
        self.run_config: dict[str, Any] | None = None

    def adopt_head_recipe(self, aux_loss_weights: Mapping[str, float] | None) -> None:
        """Apply the head's training recipe where nothing explicit was given.

        The loss temperature becomes the head's ``loss_temperature`` when ``loss.temperature`` is None; the
        auxiliary-loss weights are the head's ``aux_loss_weights`` with ``aux_loss_weights`` replacing them
        by name (see :func:`resolve_aux_loss_weights`).
        """
        if self.loss.temperature is None:
            self.loss.temperature = self.similarity.loss_temperature
        self.aux_loss_weights = resolve_aux_loss_weights(self.similarity, aux_loss_weights)

    def weighted_total(
        self, main: Tensor, aux_losses: Mapping[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """main + sum_name weight[name] * aux[name]; returns (total, named parts incl. ``sampled_softmax``)."""
        parts = {"sampled_softmax": main}
        total = main
        for name, value in aux_losses.items():
            if name not in self.aux_loss_weights:
                raise KeyError(
                    f"auxiliary loss {name!r} has no weight: {type(self.similarity).__name__}.aux_loss_weights "
                    "must name every loss the head returns"
                )
            parts[name] = value
            total = total + self.aux_loss_weights[name] * value
        return total, parts

    def with_dot_loss(
        self, total: Tensor, parts: dict[str, Tensor], dot_loss: Callable[[DotAuxiliaryLoss], Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(total, parts) plus ``dot_loss_weight`` x ``dot_loss(self.dot_loss)`` as part ``dot_loss``; unchanged
        (and ``dot_loss`` not called) when the weight is 0."""
        if self.dot_loss is None:
            return total, parts
        parts["dot_loss"] = dot_loss(self.dot_loss)
        return total + self.dot_loss_weight * parts["dot_loss"], parts

    def log_losses(self, total: Tensor, parts: Mapping[str, Tensor], batch_size: int) -> None:
        self.log("train/loss", total, prog_bar=True, batch_size=batch_size)
        for name, value in parts.items():
            if name != "sampled_softmax":
                self.log(f"train/aux/{name}", value, batch_size=batch_size)

    def optimizer_parameters(self) -> list[nn.Parameter] | list[dict[str, Any]]:
        """Every parameter, or with ``head_weight_decay`` two groups: the rest, then the head's with that decay."""
        if self.head_weight_decay is None:
            return list(self.parameters())
        head = {id(p) for p in self.similarity.parameters()}
        rest = [p for p in self.parameters() if id(p) not in head]
        return [
            {"params": rest},
            {"params": list(self.similarity.parameters()), "weight_decay": float(self.head_weight_decay)},
        ]

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.optimizer_parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.run_config is not None:
            checkpoint["rails_config"] = self.run_config

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.run_config = checkpoint.get("rails_config", self.run_config)
