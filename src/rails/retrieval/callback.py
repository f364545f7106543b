"""RetrievalEvaluator: full-corpus HR@K / NDCG@K / MRR at validation and test time (spec §6).

At the start of each validation/test epoch the whole item corpus is embedded once and turned into the
head's item state. Every evaluation batch's queries are then ranked exactly against all items (chunked
over the corpus, history window excluded), and per-metric sums are accumulated. At epoch end the sums
are all-reduced across processes and logged as ``val/hr@10``, ``val/ndcg@10``, ``val/mrr``, ``test/...``.
The popularity baseline (training-interaction counts) is ranked by the same code and logged as
``test/popularity/...``.

Configured indexes (``indexes``: name -> :class:`~rails.retrieval.index.RetrievalIndex`) are built on the
same corpus state and searched for the top ``index_k`` items of every query (history excluded). For
each, ``{stage}/{name}/hr@K`` and ``ndcg@K`` (K <= index_k) and ``mrr`` (truncated at index_k) come
from its retrieved list, ``{stage}/{name}/recall@{index_k}`` is the overlap of its top-k set with the
exact top-k set (:func:`~rails.retrieval.metrics.recall_at_k`), and ``{stage}/{name}/latency_ms`` is the
mean search time per query batch (CUDA-synchronised, query encoding excluded).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from rails.models.similarity.base import State, gather_state, slice_state
from rails.retrieval.exact import CorpusPositions, target_ranks
from rails.retrieval.index import ExactTopK, RetrievalIndex
from rails.retrieval.metrics import metric_sums, ranks_from_topk, recall_at_k


class _Accumulator:
    """Running per-metric sums and query count for one ranker."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def update(self, ranks: Tensor, ks: Sequence[int]) -> None:
        for key, value in metric_sums(ranks, ks).items():
            self.sums[key] = (
                self.sums.get(key, torch.zeros((), dtype=torch.float64, device=value.device)) + value
            )
        self.count += ranks.numel()

    def add(self, sums: dict[str, Tensor | float], count: int) -> None:
        """Add arbitrary named sums over ``count`` observations."""
        for key, value in sums.items():
            value = torch.as_tensor(value, dtype=torch.float64)
            self.sums[key] = self.sums.get(key, torch.zeros((), dtype=torch.float64)).to(value.device) + value
        self.count += count

    def compute(self, trainer: L.Trainer, keys: Sequence[str], device: torch.device) -> dict[str, float]:
        """All-reduce sums and counts across processes and return the means."""
        values = torch.stack(
            [self.sums.get(k, torch.zeros((), dtype=torch.float64, device=device)).to(device) for k in keys]
            + [torch.tensor(float(self.count), dtype=torch.float64, device=device)]
        )
        values = trainer.strategy.reduce(values, reduce_op="sum")
        total = values[-1].item()
        return {k: (values[i].item() / total if total else 0.0) for i, k in enumerate(keys)}


class RetrievalEvaluator(Callback):
    """Exact full-corpus ranking metrics for any similarity head.

    Args:
        ks: HR/NDCG cutoffs (10, 50, 200 by default; the paper also reports 1, 5, 100).
        chunk_size: corpus items scored at once per query batch (bounds memory at B x chunk_size).
        corpus_batch_size: items embedded at once when building the corpus state.
        popularity: also rank by training popularity at test time (``test/popularity/...``).
        exclude_history: remove the query's history window from the ranking (spec §6).
        indexes: name -> index searched at validation/test time (e.g. the approximate MoL indexes);
            ``None`` or empty: exact metrics only.
        index_k: k of the configured indexes' searches, of ``recall@k`` and the HR/NDCG cutoffs
            reported for them (cutoffs above it are skipped).
        exact_chunk_size: chunk size of the exact top-k search that recall is measured against.
    """

    def __init__(
        self,
        ks: Sequence[int] = (10, 50, 200),
        chunk_size: int = 65536,
        corpus_batch_size: int = 65536,
        popularity: bool = True,
        exclude_history: bool = True,
        indexes: Mapping[str, RetrievalIndex] | None = None,
        index_k: int = 100,
        exact_chunk_size: int = 65536,
    ) -> None:
        super().__init__()
        ks = [int(k) for k in ks]
        if not ks or any(k < 1 for k in ks):
            raise ValueError(f"retrieval.evaluator.ks must be positive integers, got {ks}")
        if chunk_size < 1 or corpus_batch_size < 1:
            raise ValueError("retrieval.evaluator.chunk_size and corpus_batch_size must be >= 1")
        self.ks = sorted(set(ks))
        self.chunk_size = chunk_size
        self.corpus_batch_size = corpus_batch_size
        self.popularity = popularity
        self.exclude_history = exclude_history
        if index_k < 1:
            raise ValueError(f"retrieval.evaluator.index_k must be >= 1, got {index_k}")
        self.indexes: dict[str, RetrievalIndex] = dict(indexes or {})
        for name, index in self.indexes.items():
            if not isinstance(index, RetrievalIndex):
                raise ValueError(
                    f"retrieval.evaluator.indexes.{name} must be a RetrievalIndex, got {type(index).__name__}"
                )
        self.index_k = index_k
        self._exact_index = ExactTopK(chunk_size=exact_chunk_size)
        self._timings: dict[str, _Accumulator] = {}
        self._positions: CorpusPositions | None = None
        self._item_state: State | None = None
        self._popularity_scores: Tensor | None = None
        self._accumulators: dict[str, _Accumulator] = {}

    @property
    def metric_keys(self) -> list[str]:
        return [f"{m}@{k}" for k in self.ks for m in ("hr", "ndcg")] + ["mrr"]

    @property
    def index_metric_keys(self) -> list[str]:
        ks = [k for k in self.ks if k <= self.index_k]
        return [f"{m}@{k}" for k in ks for m in ("hr", "ndcg")] + ["mrr", f"recall@{self.index_k}"]

    # ------------------------------------------------------------------------------------------- corpus
    @torch.no_grad()
    def _build_corpus(self, trainer: L.Trainer, pl_module: L.LightningModule, with_popularity: bool) -> None:
        datamodule = trainer.datamodule
        corpus_ids = datamodule.corpus_item_ids().to(pl_module.device)
        self._positions = CorpusPositions(corpus_ids)
        states = []
        for start in range(0, corpus_ids.numel(), self.corpus_batch_size):
            chunk = corpus_ids[start : start + self.corpus_batch_size]
            states.append(pl_module.similarity.encode_items(pl_module.encode_items(chunk)))
        self._item_state = {key: torch.cat([s[key] for s in states]) for key in states[0]}
        self._popularity_scores = None
        if with_popularity:
            counts = datamodule.item_popularity().to(pl_module.device)
            self._popularity_scores = counts[corpus_ids.clamp_max(counts.numel() - 1)].to(torch.float64)
        self._accumulators = {"": _Accumulator()}
        if with_popularity:
            self._accumulators["popularity/"] = _Accumulator()
        self._timings = {}
        if self.indexes:
            head = pl_module.similarity
            self._exact_index.build(head, item_ids=corpus_ids, item_state=self._item_state)
            for name, index in self.indexes.items():
                index.build(head, item_ids=corpus_ids, item_state=self._item_state)
                self._accumulators[f"{name}/"] = _Accumulator()
                self._timings[f"{name}/"] = _Accumulator()

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._build_corpus(trainer, pl_module, with_popularity=False)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._build_corpus(trainer, pl_module, with_popularity=self.popularity)

    # ------------------------------------------------------------------------------------------ batches
    @torch.no_grad()
    def _rank_batch(self, pl_module: L.LightningModule, outputs: dict[str, Any]) -> None:
        assert self._positions is not None and self._item_state is not None
        item_state = self._item_state
        head = pl_module.similarity
        query_state = head.encode_queries(outputs["queries"], **outputs["context"])
        target_pos = self._positions(outputs["targets"])
        exclude = self._positions(outputs["exclude"]) if self.exclude_history else None
        safe_target = target_pos.clamp_min(0)[:, None]
        target_scores = head.score_pairs(query_state, gather_state(item_state, safe_target))[:, 0]
        ranks = target_ranks(
            lambda s, e: head.score(query_state, slice_state(item_state, slice(s, e))),
            len(self._positions),
            target_pos,
            target_scores,
            exclude,
            self.chunk_size,
        )
        self._accumulators[""].update(ranks, self.ks)
        if self._popularity_scores is not None:
            popularity = self._popularity_scores
            batch = target_pos.shape[0]
            ranks = target_ranks(
                lambda s, e: popularity[s:e].expand(batch, -1),
                len(self._positions),
                target_pos,
                popularity[safe_target[:, 0]],
                exclude,
                self.chunk_size,
            )
            self._accumulators["popularity/"].update(ranks, self.ks)
        if self.indexes:
            exclude_ids = outputs["exclude"] if self.exclude_history else None
            self._search_indexes(query_state, outputs["targets"], exclude_ids)

    def _search_indexes(self, query_state: State, targets: Tensor, exclude: Tensor | None) -> None:
        """Search every configured index; accumulate its metrics, recall vs exact, and latency."""
        _, exact_ids = self._exact_index.search_state(query_state, self.index_k, exclude)
        ks = [k for k in self.ks if k <= self.index_k]
        batch = targets.shape[0]
        for name, index in self.indexes.items():
            _synchronize(targets.device)
            start = time.perf_counter()
            _, ids = index.search_state(query_state, self.index_k, exclude)
            _synchronize(targets.device)
            elapsed_ms = 1000.0 * (time.perf_counter() - start)
            sums: dict[str, Tensor | float] = dict(metric_sums(ranks_from_topk(ids, targets), ks))
            sums[f"recall@{self.index_k}"] = recall_at_k(ids, exact_ids) * batch
            self._accumulators[f"{name}/"].add(sums, batch)
            self._timings[f"{name}/"].add({"latency_ms": elapsed_ms}, 1)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:  # noqa: ANN001
        self._rank_batch(pl_module, outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        self._rank_batch(pl_module, outputs)

    # -------------------------------------------------------------------------------------------- epoch
    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for prefix, accumulator in self._accumulators.items():
            keys = self.index_metric_keys if prefix in self._timings else self.metric_keys
            values = accumulator.compute(trainer, keys, pl_module.device)
            for key, value in values.items():
                pl_module.log(f"{stage}/{prefix}{key}", value, sync_dist=False)
        for prefix, timing in self._timings.items():
            for key, value in timing.compute(trainer, ["latency_ms"], pl_module.device).items():
                pl_module.log(f"{stage}/{prefix}{key}", value, sync_dist=False)
        self._item_state = None
        self._popularity_scores = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            self._item_state = None
            return
        self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "test")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
