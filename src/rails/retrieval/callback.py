"""RetrievalEvaluator: full-corpus HR@K / NDCG@K / MRR at validation and test time (spec §6).

At the start of each validation/test epoch the whole item corpus is embedded once and turned into the
head's item state. Every evaluation batch's queries are then ranked exactly against all items (chunked
over the corpus, history window excluded), and per-metric sums are accumulated. At epoch end the sums
are all-reduced across processes and logged as ``val/hr@10``, ``val/ndcg@10``, ``val/mrr``, ``test/...``.
The popularity baseline (training-interaction counts) is ranked by the same code and logged as
``test/popularity/...``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from rails.models.similarity.base import State, gather_state, slice_state
from rails.retrieval.exact import CorpusPositions, target_ranks
from rails.retrieval.metrics import metric_sums


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
    """

    def __init__(
        self,
        ks: Sequence[int] = (10, 50, 200),
        chunk_size: int = 65536,
        corpus_batch_size: int = 65536,
        popularity: bool = True,
        exclude_history: bool = True,
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
        self._positions: CorpusPositions | None = None
        self._item_state: State | None = None
        self._popularity_scores: Tensor | None = None
        self._accumulators: dict[str, _Accumulator] = {}

    @property
    def metric_keys(self) -> list[str]:
        return [f"{m}@{k}" for k in self.ks for m in ("hr", "ndcg")] + ["mrr"]

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

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:  # noqa: ANN001
        self._rank_batch(pl_module, outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        self._rank_batch(pl_module, outputs)

    # -------------------------------------------------------------------------------------------- epoch
    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for prefix, accumulator in self._accumulators.items():
            values = accumulator.compute(trainer, self.metric_keys, pl_module.device)
            for key, value in values.items():
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
