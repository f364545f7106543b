"""QARetrievalModule: LM encoder(s) -> similarity head -> sampled softmax, for question -> passage retrieval.

Training (one step): the B questions and their B relevant passages of a :class:`~rails.batch.QATrainBatch`
are encoded; every question is scored against all B passages of the batch (in-batch negatives) and the R
shared uniform corpus passages the batch may carry, in one head call; its own passage is the positive and
every other column a negative, except columns that are also relevant to it (same passage, or a passage
paired with the same question in this batch), which are masked as collisions. The loss is
:class:`rails.models.losses.SampledSoftmaxLoss` plus the head's weighted auxiliary losses (MoL's
``mi_loss``), exactly as in :class:`rails.models.retrieval_module.RetrievalModule`.

Evaluation is done over the full corpus by :class:`rails.retrieval.evaluator.RetrievalEvaluator` with a
:class:`rails.retrieval.judges.QrelsJudge`, which uses :meth:`QARetrievalModule.embed_corpus`;
``validation_step`` / ``test_step`` hand it the question embeddings and the graded qrels of the batch. bf16
comes from the trainer (``precision=bf16-mixed``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from rails.batch import QAEvalBatch, QATrainBatch, TokenizedText
from rails.checks import require_at_least
from rails.models.base_module import (
    LearnedSimilarityModule,
    OptimizerFactory,
    SchedulerFactory,
    check_aux_loss_weights,
    check_dot_loss,
)
from rails.models.encoders.lm import LMEncoder
from rails.models.losses.sampled_softmax import SampledSoftmaxLoss
from rails.models.similarity.base import SimilarityHead


def in_batch_collisions(query_rows: Tensor, passage_ids: Tensor, column_ids: Tensor) -> Tensor:
    """(B, C) bool: column c holds a passage known to be relevant to row i's question.

    Args:
        query_rows: (B,) question of each row.
        passage_ids: (B,) positive passage of each row.
        column_ids: (C,) passage of each scored column (the B positives, then R random passages).
    """
    same_question = query_rows[:, None] == query_rows[None, :]  # (B, B): row j's passage is relevant to i
    is_passage_j = column_ids[None, :] == passage_ids[:, None]  # (B_j, C)
    return (same_question.to(torch.float32) @ is_passage_j.to(torch.float32)) > 0


class QARetrievalModule(LearnedSimilarityModule):
    """Dual encoder (shared or separate towers) + any similarity head, trained with sampled softmax.

    Args:
        encoder: :class:`rails.models.encoders.lm.LMEncoder`.
        similarity: head implementing :class:`rails.models.similarity.SimilarityHead` (dot product, MoL).
        loss: sampled softmax; a ``temperature`` of None takes the head's ``loss_temperature`` (dot product
            0.05, MoL 1.0).
        optimizer: partial optimizer.
        num_items: corpus size X; given by the datamodule at build time (recorded, not used for weights).
        in_batch_negatives: use the other passages of the batch as negatives (else only the random ones).
        aux_loss_weights: per-name overrides of the head's ``aux_loss_weights`` (None or {}: the head's).
        scheduler: optional partial LR scheduler.
        head_weight_decay: weight decay of the similarity head's parameters alone (None: the optimizer's).
        dot_loss_weight, dot_loss_temperature: an auxiliary dot-product loss beside the head's, on the same
            columns and collisions (see :class:`~rails.models.base_module.LearnedSimilarityModule`); needs
            question and passage embeddings of one width.

    The head's ``query_norm`` is not applied: LM encoders pool without an output normalisation.
    """

    def __init__(
        self,
        encoder: LMEncoder,
        similarity: SimilarityHead,
        loss: SampledSoftmaxLoss,
        optimizer: OptimizerFactory,
        num_items: int,
        in_batch_negatives: bool = True,
        aux_loss_weights: dict[str, float] | None = None,
        scheduler: SchedulerFactory | None = None,
        head_weight_decay: float | None = None,
        dot_loss_weight: float = 0.0,
        dot_loss_temperature: float = 0.05,
    ) -> None:
        self.check_args(locals())  # before any submodule is built: a bad key is named first
        super().__init__(optimizer, scheduler, head_weight_decay, dot_loss_weight, dot_loss_temperature)
        self.save_hyperparameters(ignore=["encoder", "similarity", "loss", "optimizer", "scheduler"])
        self.encoder = encoder
        self.similarity = similarity
        self.loss = loss
        self.in_batch_negatives = in_batch_negatives
        self.adopt_head_recipe(aux_loss_weights)

    @staticmethod
    def check_args(args: Mapping[str, Any]) -> None:
        """Argument rules (see :func:`rails.config.check_config`)."""
        if "num_items" in args:  # given by the datamodule at build time, absent from the config
            require_at_least(args, 1, "num_items")
        check_aux_loss_weights(args["aux_loss_weights"])
        check_dot_loss(args)

    # ----------------------------------------------------------------------------------------- embeddings
    def embed_queries(self, tokens: TokenizedText) -> Tensor:
        """(B, L_q) question tokens -> (B, D_q) (the head's ``encode_queries`` input)."""
        return self.encoder.embed_queries(tokens)

    def embed_passages(self, tokens: TokenizedText) -> Tensor:
        """(B, L_x) passage tokens -> (B, D_x) (the head's ``encode_items`` input)."""
        return self.encoder.embed_passages(tokens)

    def embed_corpus(self, datamodule: Any, batch_size: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """Every passage of ``datamodule.corpus_dataloader(batch_size)`` as ((C,) passage ids, (C, D_x))."""
        for batch in datamodule.corpus_dataloader(batch_size):
            batch = batch.to(self.device)
            yield batch.passage_ids, self.embed_passages(batch.passages)

    # ------------------------------------------------------------------------------------------- training
    def training_loss(self, batch: QATrainBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """Sampled softmax over in-batch and random negatives; returns (total, named parts)."""
        size = len(batch)
        queries = self.embed_queries(batch.queries)  # (B, D_q)
        columns = [self.embed_passages(batch.passages)]  # (B, D_x)
        column_ids = [batch.passage_ids]
        if batch.negatives is not None and batch.negative_ids is not None:
            columns.append(self.embed_passages(batch.negatives))  # (R, D_x)
            column_ids.append(batch.negative_ids)
        if not self.in_batch_negatives and len(columns) == 1:
            raise ValueError("model.in_batch_negatives=false needs data.num_negatives > 0")
        items = torch.cat(columns)  # (C, D_x), C = B + R
        out = self.similarity(queries, items)  # scores (B, C)
        ids = torch.cat(column_ids)
        collisions = in_batch_collisions(batch.query_rows, batch.passage_ids, ids)  # (B, C)
        rows = torch.arange(size, device=items.device)
        positives = out.scores[rows, rows]
        keep = torch.ones_like(collisions)
        keep[rows, rows] = False
        if not self.in_batch_negatives:
            keep[:, :size] = False
        width = int(keep[0].sum())
        negatives = out.scores[keep].view(size, width)
        negative_collisions = collisions[keep].view(size, width)
        main = self.loss(positives, negatives, collisions=negative_collisions)
        total, parts = self.weighted_total(main, out.aux_losses)
        # (B, 1 + width): each row's own column, then its kept negative columns (the dot loss's rows of ``items``)
        columns_of = torch.cat([rows[:, None], keep.nonzero()[:, 1].view(size, width)], dim=1)
        return self.with_dot_loss(
            total, parts, lambda dot: dot.sampled(queries, items, columns_of, negative_collisions)
        )

    def training_step(self, batch: QATrainBatch, batch_idx: int) -> Tensor:
        total, parts = self.training_loss(batch)
        self.log_losses(total, parts, len(batch))
        return total

    # ----------------------------------------------------------------------------------------- evaluation
    def _eval_outputs(self, batch: QAEvalBatch) -> dict[str, Any]:
        return {
            "queries": self.embed_queries(batch.queries),
            "context": {},
            "relevant_ids": batch.relevant_ids,
            "relevant_grades": batch.relevant_grades,
        }

    def validation_step(self, batch: QAEvalBatch, batch_idx: int) -> dict[str, Any]:
        return self._eval_outputs(batch)

    def test_step(self, batch: QAEvalBatch, batch_idx: int) -> dict[str, Any]:
        return self._eval_outputs(batch)

    def predict_step(self, batch: QAEvalBatch, batch_idx: int) -> Tensor:
        return self.embed_queries(batch.queries)
