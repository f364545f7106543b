"""QARetrievalEvaluator: full-corpus Recall@K / nDCG@K / MRR@K with graded qrels for text retrieval.

At the start of each validation/test epoch every passage of the datamodule's corpus
(``datamodule.corpus_dataloader()``, in corpus order) is encoded by ``pl_module.encode_passages`` and turned
into the head's item state once. For every evaluation batch, each (question, relevant passage) pair is
ranked exactly against the whole corpus with :func:`rails.retrieval.exact.target_ranks` (chunked, so memory
stays at B x ``chunk_size`` scores), and :func:`rails.retrieval.graded_metrics.graded_metric_sums` turns the
ranks into metric sums. At epoch end the sums are all-reduced across processes and logged as
``val/ndcg@10``, ``val/recall@100``, ``val/mrr@10``, ``test/...``.

Approximate indexes (``indexes``: name -> an object with the :mod:`rails.retrieval.index` contract,
``build(head, item_ids=..., item_state=...)`` and ``search(query_embeddings, k) -> (scores, ids)``) are
built on the same item state and scored from their top-K lists, logged as ``val/<name>/ndcg@10`` etc.
Passage ``i`` is given to them as item id ``i + 1`` (id 0 is padding in that contract).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from rails.models.similarity.base import State, gather_state, slice_state
from rails.retrieval.exact import target_ranks
from rails.retrieval.graded_metrics import graded_metric_sums, relevant_ranks_from_topk


def _positive_ints(values: Sequence[int], key: str) -> list[int]:
    out = sorted({int(v) for v in values})
    if any(v < 1 for v in out):
        raise ValueError(f"retrieval.evaluator.{key} must be positive integers, got {list(values)}")
    return out


class QARetrievalEvaluator(Callback):
    """Exact (and optionally approximate) full-corpus ranking metrics for question -> passage retrieval.

    Args:
        recall_ks: Recall cutoffs (1, 10, 100).
        ndcg_ks: nDCG cutoffs (10).
        mrr_ks: MRR cutoffs (10).
        chunk_size: corpus passages scored at once per question batch.
        indexes: optional name -> approximate index (module docstring); evaluated at cutoff max(all ks).
    """

    def __init__(
        self,
        recall_ks: Sequence[int] = (1, 10, 100),
        ndcg_ks: Sequence[int] = (10,),
        mrr_ks: Sequence[int] = (10,),
        chunk_size: int = 65536,
        indexes: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.recall_ks = _positive_ints(recall_ks, "recall_ks")
        self.ndcg_ks = _positive_ints(ndcg_ks, "ndcg_ks")
        self.mrr_ks = _positive_ints(mrr_ks, "mrr_ks")
        if chunk_size < 1:
            raise ValueError(f"retrieval.evaluator.chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self.indexes = dict(indexes or {})
        self._item_state: State | None = None
        self._num_passages = 0
        self._sums: dict[str, dict[str, Tensor]] = {}
        self._counts: dict[str, int] = {}

    @property
    def metric_keys(self) -> list[str]:
        return (
            [f"recall@{k}" for k in self.recall_ks]
            + [f"ndcg@{k}" for k in self.ndcg_ks]
            + [f"mrr@{k}" for k in self.mrr_ks]
        )

    @property
    def max_k(self) -> int:
        return max(self.recall_ks + self.ndcg_ks + self.mrr_ks)

    # ------------------------------------------------------------------------------------------- corpus
    @torch.no_grad()
    def _build_corpus(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        head = pl_module.similarity
        states: list[State] = []
        expected = 0
        with trainer.precision_plugin.forward_context():
            for batch in trainer.datamodule.corpus_dataloader():
                batch = batch.to(pl_module.device)
                ids = batch.passage_ids
                if ids[0].item() != expected or ids[-1].item() != expected + len(ids) - 1:
                    raise ValueError("datamodule.corpus_dataloader() must yield passages 0..X-1 in order")
                expected += len(ids)
                states.append(head.encode_items(pl_module.encode_passages(batch.passages)))
        self._item_state = {key: torch.cat([s[key] for s in states]) for key in states[0]}
        self._num_passages = expected
        for index in self.indexes.values():
            item_ids = torch.arange(1, expected + 1, device=pl_module.device)
            index.build(head, item_ids=item_ids, item_state=self._item_state)
        self._sums = {}
        self._counts = {}

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._build_corpus(trainer, pl_module)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._build_corpus(trainer, pl_module)

    # ------------------------------------------------------------------------------------------ batches
    def _accumulate(self, prefix: str, ranks: Tensor, grades: Tensor) -> None:
        sums = graded_metric_sums(ranks, grades, self.recall_ks, self.ndcg_ks, self.mrr_ks)
        bucket = self._sums.setdefault(prefix, {})
        for key, value in sums.items():
            bucket[key] = bucket[key] + value if key in bucket else value
        self._counts[prefix] = self._counts.get(prefix, 0) + ranks.shape[0]

    @torch.no_grad()
    def exact_ranks(self, head: Any, query_state: State, relevant: Tensor) -> Tensor:
        """(B, J) relevant passage positions (-1 = padding) -> (B, J) exact float64 ranks (inf at padding)."""
        assert self._item_state is not None
        item_state = self._item_state
        valid = relevant >= 0
        target_scores = head.score_pairs(
            query_state, gather_state(item_state, relevant.clamp_min(0))
        )  # (B, J)
        rows = valid.nonzero()[:, 0]  # (M,) question of every (question, relevant passage) pair
        ranks = target_ranks(
            lambda s, e: head.score(query_state, slice_state(item_state, slice(s, e)))[rows],
            self._num_passages,
            relevant[valid],
            target_scores[valid],
            None,
            self.chunk_size,
        )
        out = torch.full(relevant.shape, float("inf"), dtype=torch.float64, device=relevant.device)
        out[valid] = ranks
        return out

    @torch.no_grad()
    def _rank_batch(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: dict[str, Any]) -> None:
        head = pl_module.similarity
        relevant, grades = outputs["relevant_ids"], outputs["relevant_grades"]
        with trainer.precision_plugin.forward_context():  # same autocast as the corpus state (bf16 runs)
            query_state = head.encode_queries(outputs["queries"], **outputs["context"])
            self._accumulate("", self.exact_ranks(head, query_state, relevant), grades)
            for name, index in self.indexes.items():
                _, ids = index.search(outputs["queries"], self.max_k, **outputs["context"])
                self._accumulate(f"{name}/", relevant_ranks_from_topk(ids - 1, relevant), grades)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:  # noqa: ANN001
        self._rank_batch(trainer, pl_module, outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        self._rank_batch(trainer, pl_module, outputs)

    # -------------------------------------------------------------------------------------------- epoch
    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        device = pl_module.device
        keys = self.metric_keys
        for prefix in ["", *(f"{name}/" for name in self.indexes)]:
            sums = self._sums.get(prefix, {})
            zero = torch.zeros((), dtype=torch.float64, device=device)
            values = torch.stack(
                [sums.get(k, zero).to(device) for k in keys]
                + [torch.tensor(float(self._counts.get(prefix, 0)), dtype=torch.float64, device=device)]
            )
            values = trainer.strategy.reduce(values, reduce_op="sum")
            total = values[-1].item()
            for i, key in enumerate(keys):
                pl_module.log(f"{stage}/{prefix}{key}", values[i].item() / total if total else 0.0)
        self._item_state = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            self._item_state = None
            return
        self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "test")
