"""RetrievalEvaluator: full-corpus ranking metrics at validation and test time, for every preset (spec §6).

One callback serves the recommendation presets (``judge: NextItemJudge``, ``retrieval=default``) and the
question-answering presets (``judge: QrelsJudge``, ``retrieval=qa``):

1. At the start of each validation/test epoch the module embeds the whole corpus once
   (``pl_module.embed_corpus(datamodule, corpus_batch_size)`` yields (ids, embeddings) batches) and the head
   turns it into its item state. Configured indexes (name -> :class:`~rails.retrieval.indexes.RetrievalIndex`)
   are built on that state, with item id = corpus position + 1.
2. For every evaluation batch (``validation_step`` / ``test_step`` return ``queries`` (B, D_q), ``context``
   (the head's query side inputs) and what the judge reads), each corpus chunk is scored ONCE: the scores
   feed the judge's exact rank counts (:class:`~rails.retrieval.judges.RankCounter`) and, when indexes are
   configured, the running exact top-``index_k`` they are measured against. The relevant items' own scores
   come from the same call as the first chunk. Query-independent baselines of the judge (the popularity
   ranking at test time) are ranked in the same pass.
3. Each index is searched for the top ``index_k`` of every query (the judge's exclusions applied) and
   scored from that list. Indexes whose search is a collective (:class:`~rails.retrieval.indexes.ShardedIndex`
   under DDP: each rank holds one corpus shard) are searched at epoch end, in lockstep, on the queries of
   every rank gathered together (ranks may hold different numbers of batches).
4. At epoch end the sums are all-reduced with the trainer's strategy and logged: ``{stage}/{metric}`` (e.g.
   ``val/hr@10``, ``val/ndcg@10``, ``test/recall@100``), ``{stage}/{baseline}/{metric}``
   (``test/popularity/hr@10``), and per index ``{stage}/{name}/{metric}`` for the judge's cutoffs <= index_k,
   ``{stage}/{name}/{overlap}@{index_k}`` (overlap with the exact top-k: ``recall@100`` for next-item data,
   ``overlap@100`` for qrels), ``{stage}/{name}/exact_fallback_rate`` (share of queries an approximate
   index answered by exact search, too few candidates) and ``{stage}/{name}/latency_ms`` (mean search time
   per call, CUDA-synchronised, query encoding excluded). The head encodes and scores in its weights' dtype.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from rails.models.similarity.states import HeadState
from rails.retrieval.corpus import CorpusPositions
from rails.retrieval.indexes.base import RetrievalIndex
from rails.retrieval.judges import Judge, JudgedQueries, NextItemJudge, RankCounter
from rails.retrieval.metrics import recall_at_k
from rails.retrieval.topk import RunningTopK

log = logging.getLogger(__name__)


class _Accumulator:
    """Running per-metric float64 sums and an observation count for one ranker."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def add(self, sums: Mapping[str, Tensor | float], count: int) -> None:
        for key, value in sums.items():
            value = torch.as_tensor(value, dtype=torch.float64)
            previous = self.sums.get(key)
            self.sums[key] = value if previous is None else previous + value.to(previous.device)
        self.count += count

    def compute(self, trainer: L.Trainer, keys: Sequence[str], device: torch.device) -> dict[str, float]:
        """All-reduce sums and counts across processes and return the means."""
        values = torch.stack(
            [self.sums.get(k, torch.zeros((), dtype=torch.float64)).to(device) for k in keys]
            + [torch.tensor(float(self.count), dtype=torch.float64, device=device)]
        )
        values = trainer.strategy.reduce(values, reduce_op="sum")
        total = values[-1].item()
        return {k: (values[i].item() / total if total else 0.0) for i, k in enumerate(keys)}


@dataclass
class _Deferred:
    """A batch kept for the epoch-end search of collective indexes."""

    query_state: HeadState
    exclude_ids: Tensor | None
    queries: JudgedQueries
    exact: Tensor


class RetrievalEvaluator(Callback):
    """Exact full-corpus ranking metrics (and configured indexes) for any similarity head and judge.

    Args:
        judge: what is relevant and which metrics are reported (default :class:`NextItemJudge`).
        chunk_size: corpus items scored at once per query batch (bounds memory at B x chunk_size).
        corpus_batch_size: corpus items (or passages) embedded at once; None = the module's default.
        indexes: name -> index searched at validation/test time (e.g. the approximate MoL indexes);
            ``None`` or empty: exact metrics only.
        index_k: k of the configured indexes' searches, of the exact top-k they are compared with, and the
            largest metric cutoff reported for them (cutoffs above it are skipped).
        autocast: embed the corpus inside the trainer's precision context (``precision=bf16-mixed`` runs the
            towers in bf16; the QA preset sets it). The head encodes and scores without autocast, in its weights'
            dtype (16-bit embeddings of a float32 head are upcast): 16-bit scores tie, ties rank against the target.
    """

    def __init__(
        self,
        judge: Judge | None = None,
        chunk_size: int = 65536,
        corpus_batch_size: int | None = None,
        indexes: Mapping[str, RetrievalIndex] | None = None,
        index_k: int = 100,
        autocast: bool = False,
    ) -> None:
        super().__init__()
        self.judge = judge if judge is not None else NextItemJudge()
        if not isinstance(self.judge, Judge):
            raise ValueError(f"retrieval.evaluator.judge must be a Judge, got {type(self.judge).__name__}")
        if chunk_size < 1:
            raise ValueError(f"retrieval.evaluator.chunk_size must be >= 1, got {chunk_size}")
        if corpus_batch_size is not None and corpus_batch_size < 1:
            raise ValueError(
                f"retrieval.evaluator.corpus_batch_size must be >= 1 or null, got {corpus_batch_size}"
            )
        if index_k < 1:
            raise ValueError(f"retrieval.evaluator.index_k must be >= 1, got {index_k}")
        self.indexes: dict[str, RetrievalIndex] = dict(indexes or {})
        for name, index in self.indexes.items():
            if not isinstance(index, RetrievalIndex):
                raise ValueError(
                    f"retrieval.evaluator.indexes.{name} must be a RetrievalIndex, got {type(index).__name__}"
                )
        self.chunk_size = chunk_size
        self.corpus_batch_size = corpus_batch_size
        self.index_k = index_k
        self.autocast = autocast
        self._item_state: HeadState | None = None
        self._positions: CorpusPositions | None = None
        self._baselines: dict[str, Tensor] = {}
        self._accumulators: dict[str, _Accumulator] = {}
        self._timings: dict[str, _Accumulator] = {}
        self._deferred: list[_Deferred] = []
        self._warned_dtype = False

    @property
    def index_metric_keys(self) -> list[str]:
        """Metrics logged per index (besides ``latency_ms``)."""
        overlap = f"{self.judge.overlap_name}@{self.index_k}"
        return [*self.judge.index_metric_keys(self.index_k), overlap, "exact_fallback_rate"]

    def _context(self, trainer: L.Trainer) -> contextlib.AbstractContextManager:
        return trainer.precision_plugin.forward_context() if self.autocast else contextlib.nullcontext()

    # ------------------------------------------------------------------------------------------- corpus
    @torch.no_grad()
    def _build_corpus(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        head = pl_module.similarity
        ids, states = [], []
        with self._context(trainer):
            for batch_ids, embeddings in pl_module.embed_corpus(trainer.datamodule, self.corpus_batch_size):
                ids.append(batch_ids.to(pl_module.device))
                with _no_autocast(embeddings.device):
                    states.append(head.encode_items(_upcast(embeddings, head)))
        if not states:
            raise ValueError("the datamodule's corpus is empty: nothing to rank against")
        corpus_ids = torch.cat(ids)
        self._item_state = type(states[0]).cat(states)
        self._positions = CorpusPositions(corpus_ids)
        self._baselines = self.judge.baselines(trainer.datamodule, corpus_ids, stage)
        self._accumulators = {"": _Accumulator(), **{f"{name}/": _Accumulator() for name in self._baselines}}
        self._timings = {}
        self._deferred = []
        index_ids = torch.arange(1, corpus_ids.numel() + 1, device=corpus_ids.device)  # position + 1
        for name, index in self.indexes.items():
            index.build(head, item_ids=index_ids, item_state=self._item_state)
            self._accumulators[f"{name}/"] = _Accumulator()
            self._timings[f"{name}/"] = _Accumulator()

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._build_corpus(trainer, pl_module, "val")

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._build_corpus(trainer, pl_module, "test")

    # ------------------------------------------------------------------------------------------ batches
    def _chunks(
        self, head: Any, query_state: HeadState, relevant: Tensor
    ) -> Iterator[tuple[int, Tensor, Tensor]]:
        """(start, (B, C) scores of corpus[start:start + C], (B, J) relevant scores) per chunk, each scored once.

        The first call also scores the relevant items outside the first chunk, so their scores come from
        the same call as the others' (with one chunk: from the very same scores).
        """
        assert self._item_state is not None
        item_state = self._item_state
        num_items = len(item_state)
        first_end = min(self.chunk_size, num_items)
        flat = relevant[relevant >= 0]
        extra = torch.unique(flat[flat >= first_end])  # sorted
        first = item_state.index(slice(0, first_end))
        if extra.numel():
            first = type(first).cat([first, item_state.gather(extra)])
        scores = head.score(query_state, first)
        safe = relevant.clamp_min(0)
        outside = safe >= first_end
        column = torch.where(outside, first_end + torch.searchsorted(extra, safe), safe)
        relevant_scores = scores.gather(1, column.clamp_max(scores.shape[1] - 1))
        yield 0, scores[:, :first_end], relevant_scores
        for start in range(first_end, num_items, self.chunk_size):
            end = min(start + self.chunk_size, num_items)
            yield start, head.score(query_state, item_state.index(slice(start, end))), relevant_scores

    def _check_score_dtype(self, scores: Tensor, head: Any) -> None:
        """Warn once when the head ranks with 16-bit scores: they tie, and ties count against the target."""
        if self._warned_dtype or scores.dtype not in (torch.bfloat16, torch.float16):
            return
        self._warned_dtype = True
        log.warning(
            f"{type(head).__name__} scores are {scores.dtype} at evaluation: 16-bit scores tie and ties rank "
            "against the target, which lowers HR / NDCG (by up to 2 % in results/studies/2026-12-01-h200-eval-"
            "precision.md). Float32 scores: float32 weights (not bf16-true), model.similarity.eval_autocast_bf16=false"
        )

    @torch.no_grad()
    def _rank_batch(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Mapping[str, Any]
    ) -> None:
        assert self._positions is not None
        head = pl_module.similarity
        with _no_autocast(pl_module.device):
            query_state = head.encode_queries(_upcast(outputs["queries"], head), **outputs["context"])
            queries = self.judge.judge(outputs, self._positions)
            counter: RankCounter | None = None
            baselines = {
                name: RankCounter(queries, scores[queries.relevant.clamp_min(0)])
                for name, scores in self._baselines.items()
            }
            exact = RunningTopK(min(self.index_k, len(self._positions))) if self.indexes else None
            for start, scores, relevant_scores in self._chunks(head, query_state, queries.relevant):
                if counter is None:
                    self._check_score_dtype(scores, head)
                    counter = RankCounter(queries, relevant_scores)
                counter.update(scores, start)
                if exact is not None:
                    exact.update(scores, start, queries.exclude)
                for name, baseline in baselines.items():
                    end = start + scores.shape[1]
                    baseline.update(self._baselines[name][start:end].expand(len(queries), -1), start)
            assert counter is not None
            batch = len(queries)
            self._accumulators[""].add(self.judge.metric_sums(counter.ranks(), queries), batch)
            for name, baseline in baselines.items():
                self._accumulators[f"{name}/"].add(self.judge.metric_sums(baseline.ranks(), queries), batch)
            if exact is None:
                return
            _, exact_positions = exact.result(batch, query_state.device)
            exclude_ids = None if queries.exclude is None else queries.exclude + 1  # index id = position + 1
            for name, index in self.indexes.items():
                if index.collective:
                    continue
                start_time = _synchronized_time(query_state.device)
                _, ids = index.search_state(query_state, self.index_k, exclude_ids)
                elapsed_ms = 1000.0 * (_synchronized_time(query_state.device) - start_time)
                self._add_index_results(name, ids - 1, index.exact_fallback_rows, queries, exact_positions)
                self._timings[f"{name}/"].add({"latency_ms": elapsed_ms}, 1)
            if any(index.collective for index in self.indexes.values()):
                self._deferred.append(_Deferred(query_state, exclude_ids, queries, exact_positions))

    def _add_index_results(
        self, name: str, topk: Tensor, fallback_rows: int, queries: JudgedQueries, exact: Tensor
    ) -> None:
        """Accumulate one index's metrics for a batch from its (B, K) top-k positions (-1 = empty slot), the
        number of queries it answered by exact fallback and the (B, K) exact top-k positions."""
        batch = len(queries)
        sums: dict[str, Tensor | float] = dict(self.judge.index_metric_sums(topk, queries, self.index_k))
        sums[f"{self.judge.overlap_name}@{self.index_k}"] = recall_at_k(topk, exact) * batch
        sums["exact_fallback_rate"] = float(fallback_rows)
        self._accumulators[f"{name}/"].add(sums, batch)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:  # noqa: ANN001
        self._rank_batch(trainer, pl_module, outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        self._rank_batch(trainer, pl_module, outputs)

    # -------------------------------------------------------------------------------- collective indexes
    @torch.no_grad()
    def _search_collective(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Search every collective index with the queries of all ranks, in the same calls on every rank."""
        collective = {name: index for name, index in self.indexes.items() if index.collective}
        if not collective:
            return
        device = pl_module.device
        local = _gather_payload(self._deferred)
        payloads: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(payloads, local)  # CPU copies: tiny next to the corpus
        offset = sum(p["rows"] for p in payloads[: dist.get_rank()])
        rows = local["rows"]
        step = max(max(p["batch"] for p in payloads), 1)
        present = [p for p in payloads if p["rows"]]
        if not present:
            return
        query_state = type(present[0]["state"]).cat([p["state"] for p in present]).to(device)
        exclude = _cat_padded([p["exclude"] for p in present], device)
        with _no_autocast(device):
            for name, index in collective.items():
                found, fallback = [], []
                for start in range(0, len(query_state), step):
                    part = slice(start, start + step)
                    start_time = _synchronized_time(device)
                    _, ids = index.search_state(
                        query_state.index(part), self.index_k, None if exclude is None else exclude[part]
                    )
                    self._timings[f"{name}/"].add(
                        {"latency_ms": 1000.0 * (_synchronized_time(device) - start_time)}, 1
                    )
                    found.append(ids - 1)
                    fallback.append(index.exact_fallback)
                topk = torch.cat(found)[offset : offset + rows]
                flags = torch.cat(fallback)[offset : offset + rows]
                row = 0
                for deferred in self._deferred:
                    batch = len(deferred.queries)
                    fallback_rows = int(flags[row : row + batch].sum())
                    self._add_index_results(
                        name, topk[row : row + batch], fallback_rows, deferred.queries, deferred.exact
                    )
                    row += batch
        self._deferred = []

    # -------------------------------------------------------------------------------------------- epoch
    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._search_collective(trainer, pl_module)
        for prefix, accumulator in self._accumulators.items():
            keys = self.index_metric_keys if prefix in self._timings else self.judge.metric_keys
            for key, value in accumulator.compute(trainer, keys, pl_module.device).items():
                pl_module.log(f"{stage}/{prefix}{key}", value, sync_dist=False)
        for prefix, timing in self._timings.items():
            for key, value in timing.compute(trainer, ["latency_ms"], pl_module.device).items():
                pl_module.log(f"{stage}/{prefix}{key}", value, sync_dist=False)
        self._release()

    def _release(self) -> None:
        self._item_state = None
        self._baselines = {}
        self._deferred = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            self._release()
            return
        self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "test")


def _gather_payload(deferred: Sequence[_Deferred]) -> dict[str, Any]:
    """This rank's deferred queries as CPU tensors: ``rows``, largest ``batch``, ``state``, ``exclude``."""
    if not deferred:
        return {"rows": 0, "batch": 0, "state": None, "exclude": None}
    state = type(deferred[0].query_state).cat([d.query_state for d in deferred]).to("cpu")
    excludes = [d.exclude_ids for d in deferred]
    exclude = None if excludes[0] is None else _cat_padded([e.cpu() for e in excludes], torch.device("cpu"))
    return {
        "rows": len(state),
        "batch": max(len(d.queries) for d in deferred),
        "state": state,
        "exclude": exclude,
    }


def _cat_padded(parts: Sequence[Tensor | None], device: torch.device) -> Tensor | None:
    """Concatenate (N_i, H_i) id tensors along rows, right-padding with 0 (no item) to the widest H."""
    if not parts or parts[0] is None:
        return None
    width = max(p.shape[1] for p in parts if p is not None)
    padded = [torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts if p is not None]
    return torch.cat(padded).to(device)


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """The head's context: autocast off, its inputs in its weights' dtype (:func:`_upcast`)."""
    return torch.autocast(device_type=device.type, enabled=False)


def _upcast(embeddings: Tensor, head: Any) -> Tensor:
    """Floating embeddings in the dtype of the head's weights (float32 for a head without any): 16-bit tower
    outputs of a float32 head are scored in float32; a bf16-true head keeps its bf16."""
    weights = [p.dtype for p in getattr(head, "parameters", list)() if p.is_floating_point()]
    return embeddings.to((weights or [torch.float32])[0]) if embeddings.is_floating_point() else embeddings


def _synchronized_time(device: torch.device) -> float:
    """perf_counter after the device's queued work (CUDA) has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
