"""An exponential moving average (EMA) of the weights that validation, checkpoints and the test stage use.

``callbacks/weight_averaging=ema`` (conf/callbacks/weight_averaging/ema.yaml) adds :class:`EMAWeights`, Lightning's
:class:`~lightning.pytorch.callbacks.EMAWeightAveraging` with three changes for a retrieval run:

- the averaged weights are swapped in for the whole validation loop (``on_validation_start`` to
  ``on_validation_end``), not per validation epoch, so every callback's epoch hooks see them whatever the callback
  order: the retrieval evaluator encodes the corpus when a validation epoch starts and scores deferred queries
  when it ends, both with the weights that encoded the queries;
- only parameters are averaged and swapped; buffers are not learned and the average's copies follow the model's,
  also when the model replaces one with a tensor of another shape before training starts
  (``RetrievalModule.corpus_ids``, the negative pool, is set in ``on_fit_start``, after the copy taken at setup);
- the swap and the checkpoint hook act while fitting only: ``rails-train`` validates and tests the best
  checkpoint after ``fit`` with the same trainer, and that checkpoint's ``state_dict`` is already the averaged
  model (Lightning's hook would load the raw weights of ``current_model_state`` over it).

A checkpoint written while fitting holds the averaged weights as ``state_dict`` (what ``rails-eval``, the test
stage and the top-k benchmark load), the raw weights as ``current_model_state`` and the average's step count, so
``ckpt_path=last`` resumes both.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from rails.checks import require, require_at_least


class EMAWeights(EMAWeightAveraging):
    """EMA of the parameters, ``avg = decay * avg + (1 - decay) * param`` after each optimizer step.

    Args:
        decay: (float in [0, 1]) weight of the running average per update; 0 keeps the raw weights.
        update_every_n_steps: (int >= 1) update after every N-th optimizer step.
        update_starting_at_step: (int | None) first optimizer step (0-based) that updates; the first update
            copies the weights.
    """

    def __init__(
        self,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
    ) -> None:
        self.check_args(locals())
        super().__init__(
            use_buffers=False,
            decay=decay,
            update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
        )

    @staticmethod
    def check_args(args: Mapping[str, Any]) -> None:
        """Argument rules (see :func:`rails.config.check_config`)."""
        decay, first = args["decay"], args["update_starting_at_step"]
        require(0.0 <= decay <= 1.0, "decay", decay, "must lie in [0, 1]")
        require_at_least(args, 1, "update_every_n_steps")
        require(first is None or first >= 0, "update_starting_at_step", first, "must be >= 0 or null")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Give the average a copy of each model buffer replaced since setup (after every ``on_fit_start``)."""
        assert self._average_model is not None
        average = self._average_model.module
        for (name, copy), (_, buffer) in zip(average.named_buffers(), pl_module.named_buffers(), strict=True):
            if copy.shape != buffer.shape:
                owner, _, attribute = name.rpartition(".")
                setattr(average.get_submodule(owner), attribute, buffer.detach().clone())

    # ------------------------------------------------------------------------------------------ validation
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Nothing: the averaged weights are already in place (``on_validation_start``)."""

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Nothing: the raw weights come back in ``on_validation_end``."""

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._fitting(trainer):
            self._swap_models(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning runs ModelCheckpoint's on_validation_end after every other callback's, so the raw weights are
        # back in place when it saves; on_save_checkpoint then puts the average in the checkpoint's state_dict.
        if self._fitting(trainer):
            self._swap_models(pl_module)

    def _fitting(self, trainer: L.Trainer) -> bool:
        return self._average_model is not None and trainer.state.fn == TrainerFn.FITTING

    # ------------------------------------------------------------------------------------------ checkpoints
    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Restore the raw weights and the average when fitting resumes; otherwise keep ``state_dict`` (the average)."""
        if self._fitting(trainer):
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    # ------------------------------------------------------------------------------------------ parameters only
    def _parameter_pairs(self, pl_module: L.LightningModule) -> Iterator[tuple[Tensor, Tensor]]:
        """(averaged, current) parameter pairs; buffers are not averaged."""
        assert self._average_model is not None
        return zip(self._average_model.module.parameters(), pl_module.parameters(), strict=True)

    def _swap_models(self, pl_module: L.LightningModule) -> None:
        """Exchange the values of the averaged and the current parameters (buffers stay)."""
        for average, current in self._parameter_pairs(pl_module):
            held = average.data.clone()
            average.data.copy_(current.data)
            current.data.copy_(held)

    def _copy_average_to_current(self, pl_module: L.LightningModule) -> None:
        """Load the averaged parameters into the model (end of fit)."""
        for average, current in self._parameter_pairs(pl_module):
            current.data.copy_(average.data)
