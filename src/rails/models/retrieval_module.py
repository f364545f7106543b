"""RetrievalModule: encoder -> similarity head -> loss, with no model-specific code.

Training (spec §3.1-3.3): every valid history position of every user is a query that predicts the next
item; the positive and R uniformly sampled negatives are scored by the head in one call equal in
distribution to the reference's two calls (the auxiliary losses come from the positive column only), and
the sampled-softmax loss plus the weighted auxiliary losses is minimised with AdamW.

The similarity head brings its training recipe (see :class:`rails.models.similarity.base.SimilarityHead`):
unless given explicitly, the loss temperature is the head's ``loss_temperature``, the encoder's output
normalisation its ``query_norm`` and the auxiliary-loss weights its ``aux_loss_weights``, so any encoder
trains with any head without other settings.

The negative pool is the datamodule's candidate corpus: a datamodule implementing :class:`CorpusSource`
(``corpus_item_ids()``) supplies it when fitting starts; without one, :meth:`RetrievalModule.set_corpus` must
have been called (fitting without a pool raises at once).

Evaluation is done by :class:`rails.retrieval.evaluator.RetrievalEvaluator`, which uses :meth:`embed_corpus`
and ``self.similarity``; ``validation_step`` and ``test_step`` hand it the query embeddings of the batch, the
head's query context, the target ids and the history ids (for :class:`rails.retrieval.judges.NextItemJudge`).

Naming: ``embed_*`` maps ids to vectors (:meth:`embed_items`, :meth:`embed_sequences`, :meth:`embed_queries`);
the head's ``encode_*`` maps vectors to its state.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from rails.batch import SequenceBatch
from rails.checks import option_of, require, require_at_least
from rails.models.base_module import (
    LearnedSimilarityModule,
    OptimizerFactory,
    SchedulerFactory,
    check_aux_loss_weights,
    check_dot_loss,
)
from rails.models.encoders.base import SequenceEncoder, SequenceHistory
from rails.models.item_embeddings import ItemEmbeddings
from rails.models.losses.negatives import NegativeSampler
from rails.models.losses.sampled_softmax import SampledSoftmaxLoss
from rails.models.similarity.base import SimilarityHead

# torch.compile modes accepted for the encoder (None: torch's default).
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@runtime_checkable
class CorpusSource(Protocol):
    """What :class:`RetrievalModule` asks of its datamodule: the candidate corpus (negative pool, evaluation)."""

    def corpus_item_ids(self) -> Tensor:
        """(X,) int64 every candidate item id."""
        ...


class RetrievalModule(LearnedSimilarityModule):
    """Composes an item table, a sequence encoder, a similarity head, a negative sampler and a loss.

    Args:
        encoder: maps (B, N, D) history embeddings to (B, N, D) per-position queries; an ``output_norm`` of
            None takes the head's ``query_norm``.
        similarity: head implementing :class:`rails.models.similarity.SimilarityHead`; its ``query_dim`` /
            ``item_dim``, where it has them, must equal the encoder width / ``item_dim``.
        loss: sampled softmax; a ``temperature`` of None takes the head's ``loss_temperature``.
        negatives: negative sampler (:mod:`rails.models.losses.negatives`): per-position (M, R) negatives
            scored in one head call, or an (R,) set shared by every position scored as one (M, R) matrix.
        optimizer: partial optimizer, called with the parameters.
        num_items: item table rows (max item id + 1); given by the datamodule at build time.
        item_dim: D of the item table (must equal the encoder's width).
        aux_loss_weights: per-name overrides of the head's ``aux_loss_weights`` (None or {}: the head's;
            names the head class never returns raise).
        scheduler: optional partial LR scheduler, stepped every optimizer step.
        compile_encoder: compile the encoder's forward with ``torch.compile`` (``nn.Module.compile``: in place,
            so parameter names and checkpoints are the same with and without it).
        compile_mode: ``torch.compile`` mode of the compiled encoder: None (default: fused kernels),
            ``reduce-overhead`` (also CUDA graphs: one launch per graph), ``max-autotune``,
            ``max-autotune-no-cudagraphs``.
        head_weight_decay: weight decay of the similarity head's parameters alone (None: the optimizer's, for
            every parameter).
        dot_loss_weight, dot_loss_temperature: an auxiliary dot-product loss beside the head's (see
            :class:`~rails.models.base_module.LearnedSimilarityModule`).
    """

    def __init__(
        self,
        encoder: SequenceEncoder,
        similarity: SimilarityHead,
        loss: SampledSoftmaxLoss,
        negatives: NegativeSampler,
        optimizer: OptimizerFactory,
        num_items: int,
        item_dim: int = 50,
        aux_loss_weights: dict[str, float] | None = None,
        scheduler: SchedulerFactory | None = None,
        compile_encoder: bool = False,
        compile_mode: str | None = None,
        head_weight_decay: float | None = None,
        dot_loss_weight: float = 0.0,
        dot_loss_temperature: float = 0.05,
    ) -> None:
        self.check_args(locals())  # before any submodule is built: a bad key is named first
        super().__init__(optimizer, scheduler, head_weight_decay, dot_loss_weight, dot_loss_temperature)
        self.save_hyperparameters(
            ignore=["encoder", "similarity", "loss", "negatives", "optimizer", "scheduler"]
        )
        encoder.prefer_output_norm(similarity.query_norm)
        self.items = ItemEmbeddings(num_items, item_dim)
        if compile_encoder:
            encoder.compile(mode=compile_mode)
        self.encoder = encoder
        self.similarity = similarity
        self.loss = loss
        self.negatives = negatives
        self.adopt_head_recipe(aux_loss_weights)
        self.register_buffer("corpus_ids", torch.zeros(0, dtype=torch.int64), persistent=False)

    @staticmethod
    def check_args(args: Mapping[str, Any]) -> None:
        """Argument rules, including the widths the encoder, item table and head must share.

        ``encoder`` and ``similarity`` are config mappings (config check) or built objects (constructor).
        """
        item_dim = args["item_dim"]
        require_at_least(args, 1, "item_dim")
        mode = args.get("compile_mode")
        require(mode in COMPILE_MODES, "compile_mode", mode, f"must be one of {list(COMPILE_MODES)}")
        check_aux_loss_weights(args["aux_loss_weights"])
        check_dot_loss(args)
        encoder_dim = option_of(args["encoder"], "dim")
        require(
            encoder_dim is None or encoder_dim == item_dim,
            "encoder.dim",
            encoder_dim,
            f"must equal item_dim={item_dim} (the item table width)",
        )
        widths = {"query_dim": ("the encoder width", encoder_dim), "item_dim": ("item_dim", item_dim)}
        for name, (what, width) in widths.items():
            head_width = option_of(args["similarity"], name)
            require(
                head_width is None or width is None or head_width == width,
                f"similarity.{name}",
                head_width,
                f"must equal {what} ({width})",
            )

    # ----------------------------------------------------------------------------------------- embeddings
    def set_corpus(self, corpus_ids: Tensor) -> None:
        """Register the (X,) candidate ids used as the negative pool."""
        self.corpus_ids = corpus_ids.to(device=self.device, dtype=torch.int64)

    def embed_items(self, item_ids: Tensor) -> Tensor:
        """(*S,) item ids -> (*S, D) item embeddings (the head's ``encode_items`` input)."""
        return self.items(item_ids)

    def embed_sequences(self, batch: SequenceBatch) -> Tensor:
        """(B, N, D) per-position query embeddings of the batch's histories (targets are not shown)."""
        return self.encoder(self.items(batch.history_ids), SequenceHistory.of(batch))

    def embed_queries(self, batch: SequenceBatch) -> Tensor:
        """(B, D) embedding at the last valid history position (the evaluation query)."""
        per_position = self.embed_sequences(batch)
        rows = torch.arange(len(batch), device=per_position.device)
        return per_position[rows, batch.lengths - 1]

    def embed_corpus(
        self, datamodule: CorpusSource, batch_size: int | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """The datamodule's corpus as ((C,) item ids, (C, D) embeddings) batches of ``batch_size`` (65536)."""
        corpus_ids = datamodule.corpus_item_ids().to(self.device)
        size = batch_size or 65536
        for start in range(0, corpus_ids.numel(), size):
            ids = corpus_ids[start : start + size]
            yield ids, self.embed_items(ids)

    @staticmethod
    def query_context(batch: SequenceBatch) -> dict[str, Tensor]:
        """Side inputs of ``similarity.encode_queries`` for the batch's queries."""
        return {"user_ids": batch.user_ids}

    # ------------------------------------------------------------------------------------------- training
    def training_loss(self, batch: SequenceBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """Sampled-softmax loss over every supervised position (the last one only for a non-causal encoder);
        returns (total, named parts).

        One head call scores each position's [positive | R negatives] (``forward_sampled``, equal in
        distribution to the two calls of spec §3.2; auxiliary losses from the positive column only). The
        items are one table encoded once: the negatives' rows (see :meth:`negative_table`), then one row per
        position for its positive (so each positive's item-side dropout is its own, as in a separate call).
        """
        per_position = self.embed_sequences(batch)  # (B, N, D)
        next_ids = batch.next_ids()  # (B, N)
        # outputs of a non-causal encoder see later items: only the last position predicts unseen data
        index = batch.supervised_positions(not self.encoder.causal, next_ids)  # (M,), no host sync
        queries = per_position.flatten(0, 1).index_select(0, index)  # (M, D)
        positives = next_ids.flatten().index_select(0, index)  # (M,)
        user_ids = batch.user_ids.index_select(0, index // next_ids.shape[1])  # (M,)
        if self.corpus_ids.numel() == 0:
            raise RuntimeError("RetrievalModule has no negative pool: see on_fit_start / set_corpus()")
        negative_ids = self.negatives(queries.shape[0], self.corpus_ids, positives)  # (M, R) or shared (R,)
        if self.negatives.shared:
            return self.shared_negatives_loss(queries, positives, negative_ids, user_ids)
        table_ids, negative_rows = self.negative_table(negative_ids)
        positive_rows = torch.arange(
            table_ids.numel(), table_ids.numel() + positives.numel(), device=self.device
        )
        rows = torch.cat([positive_rows[:, None], negative_rows], dim=1)  # (M, 1 + R)
        item_embeddings = self.items(torch.cat([table_ids, positives]))  # (T + M, D)
        output = self.similarity.forward_sampled(queries, item_embeddings, rows, user_ids=user_ids)
        collisions = negative_ids == positives[:, None]  # (M, R)
        main = self.loss.joint(output.scores, collisions=collisions)
        total, parts = self.weighted_total(main, output.aux_losses)
        return self.with_dot_loss(
            total, parts, lambda dot: dot.sampled(queries, item_embeddings, rows, collisions)
        )

    def shared_negatives_loss(
        self, queries: Tensor, positives: Tensor, negative_ids: Tensor, user_ids: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss with one negative set for every position (``negatives.shared``), e.g. the full corpus.

        The two calls of spec §3.2: the positive call (auxiliary losses from it), then the (M, R) scores of
        every query against the shared items, computed by the head's ``score`` (one matrix, no (M, R)
        gather); negatives equal to a position's positive are masked.

        Args:
            queries: (M, D) per-position query embeddings.
            positives: (M,) positive ids.
            negative_ids: (R,) ids shared by every position.
            user_ids: (M,) user of each position (query context).
        """
        positive_embeddings, negative_embeddings = self.items(positives), self.items(negative_ids)
        positive_out = self.similarity(queries, positive_embeddings[:, None, :], user_ids=user_ids)
        query_state = self.similarity.encode_queries(queries, user_ids=user_ids)
        negative_scores = self.similarity.score(
            query_state, self.similarity.encode_items(negative_embeddings)
        )
        collisions = negative_ids[None, :] == positives[:, None]  # (M, R)
        main = self.loss(positive_out.scores[:, 0], negative_scores, collisions=collisions)
        total, parts = self.weighted_total(main, positive_out.aux_losses)
        return self.with_dot_loss(
            total,
            parts,
            lambda dot: dot.shared(queries, positive_embeddings, negative_embeddings, collisions),
        )

    def negative_table(self, negative_ids: Tensor) -> tuple[Tensor, Tensor]:
        """The item ids whose rows the negatives use: ((T,) ids, (M, R) rows into them).

        When at least as many negatives are drawn as the item table has rows (ML-1M: 1.7M draws, 3,707 rows),
        the whole table is used and the rows are the ids themselves (most rows are drawn anyway; no sort and
        no host synchronisation); otherwise the distinct ids (``unique``). Either way each distinct negative
        is encoded once per step, so its item-side dropout is shared by its repeats within the step.
        """
        num_items = self.items.num_items
        if negative_ids.numel() >= num_items:
            return torch.arange(num_items, device=negative_ids.device), negative_ids
        return negative_ids.unique(return_inverse=True)

    def on_fit_start(self) -> None:
        """Take the negative pool from the datamodule (a :class:`CorpusSource`), or keep the one set before.

        Raises:
            ValueError: when the datamodule is not a CorpusSource and no pool was set with :meth:`set_corpus`.
        """
        datamodule = self.trainer.datamodule
        if isinstance(datamodule, CorpusSource):
            self.set_corpus(datamodule.corpus_item_ids())
        elif self.corpus_ids.numel() == 0:
            raise ValueError(
                f"RetrievalModule needs a negative pool: the datamodule ({type(datamodule).__name__}) has no "
                "corpus_item_ids() (rails.models.retrieval_module.CorpusSource); call set_corpus(ids) before fit"
            )

    def training_step(self, batch: SequenceBatch, batch_idx: int) -> Tensor:
        total, parts = self.training_loss(batch)
        self.log_losses(total, parts, batch_size=len(batch))
        return total

    # ----------------------------------------------------------------------------------------- evaluation
    def _eval_outputs(self, batch: SequenceBatch) -> dict[str, Any]:
        return {
            "queries": self.embed_queries(batch),
            "context": self.query_context(batch),
            "targets": batch.target_ids,
            "exclude": batch.history_ids,
        }

    def validation_step(self, batch: SequenceBatch, batch_idx: int) -> dict[str, Any]:
        return self._eval_outputs(batch)

    def test_step(self, batch: SequenceBatch, batch_idx: int) -> dict[str, Any]:
        return self._eval_outputs(batch)

    def predict_step(self, batch: SequenceBatch, batch_idx: int) -> Tensor:
        return self.embed_queries(batch)
