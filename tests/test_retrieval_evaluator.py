"""The one evaluation callback, driven hook by hook on CPU: exact ranks vs full sorts for both judges, each
corpus chunk scored once, index metrics, exact-fallback rates, and the faiss -> torch fallback.

:func:`run_epoch` plays a validation/test epoch with a minimal trainer and module (what the evaluator reads of
them); ``tests/test_retrieval_sharded.py`` reuses it under two gloo processes.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import Tensor

from rails.models.similarity import DotProductSimilarity, SimilarityHead
from rails.retrieval import (
    ExactTopK,
    FaissMIPS,
    NextItemJudge,
    PerComponentTopK,
    QrelsJudge,
    RetrievalEvaluator,
)
from rails.retrieval import mips as mips_module
from rails.retrieval.metrics import graded_metrics, retrieval_metrics
from tests.test_retrieval_index import ITEM_DIM, QUERY_DIM, tiny_mol


class _Strategy:
    def reduce(self, tensor: Tensor, reduce_op: str = "sum") -> Tensor:
        if dist.is_available() and dist.is_initialized():
            tensor = tensor.clone()
            dist.all_reduce(tensor)
        return tensor


class FakeTrainer:
    """What the evaluator reads of a Lightning trainer."""

    def __init__(self, datamodule: Any) -> None:
        self.datamodule = datamodule
        self.strategy = _Strategy()
        self.precision_plugin = SimpleNamespace(forward_context=contextlib.nullcontext)
        self.sanity_checking = False
        self.world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class FakeModule:
    """What the evaluator reads of a rails module: ``similarity``, ``embed_corpus``, ``device``, ``log``."""

    def __init__(self, head: SimilarityHead, table: Tensor) -> None:
        self.similarity = head
        self.table = table  # (rows, D_x), row = item id
        self.device = torch.device("cpu")
        self.logged: dict[str, float] = {}

    def embed_corpus(self, datamodule: Any, batch_size: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        ids = datamodule.corpus_item_ids()
        size = batch_size or 65536
        for start in range(0, ids.numel(), size):
            yield ids[start : start + size], self.table[ids[start : start + size]]

    def log(self, name: str, value: float, **kwargs: Any) -> None:
        self.logged[name] = value


def run_epoch(evaluator: RetrievalEvaluator, trainer: FakeTrainer, module: FakeModule, batches, stage: str):
    """One validation or test epoch through the evaluator's hooks; returns what it logged."""
    module.logged = {}
    hook = {"val": "validation", "test": "test"}[stage]
    getattr(evaluator, f"on_{hook}_epoch_start")(trainer, module)
    for i, outputs in enumerate(batches):
        getattr(evaluator, f"on_{hook}_batch_end")(trainer, module, outputs, None, i)
    getattr(evaluator, f"on_{hook}_epoch_end")(trainer, module)
    return module.logged


def next_item_problem(seed: int = 0, num_items: int = 23, batches: int = 3, batch: int = 4):
    """Non-contiguous corpus ids, a table indexed by id, query batches with targets and histories."""
    gen = torch.Generator().manual_seed(seed)
    corpus = torch.randperm(60, generator=gen)[:num_items] + 1
    table = torch.randn(61, ITEM_DIM, generator=gen)
    popularity = torch.randint(0, 5, (61,), generator=gen)
    datamodule = SimpleNamespace(corpus_item_ids=lambda: corpus, item_popularity=lambda: popularity)
    outputs = []
    for _ in range(batches):
        targets = corpus[torch.randint(0, num_items, (batch,), generator=gen)]
        history = corpus[torch.randint(0, num_items, (batch, 3), generator=gen)]
        history[0, 1:] = 0  # padding
        history[1, 0] = targets[1]  # the target is in the history: excluded, rank inf
        outputs.append(
            {
                "queries": torch.randn(batch, QUERY_DIM, generator=gen),
                "context": {},
                "targets": targets,
                "exclude": history,
            }
        )
    return corpus, table, datamodule, outputs


def sorted_ranks(scores: Tensor, corpus: Tensor, targets: Tensor, exclude: Tensor) -> Tensor:
    """Pessimistic ranks from the full (B, X) score matrix: 1 + #{other, not excluded, score >= target's}."""
    ranks = []
    for b in range(scores.shape[0]):
        excluded = {int(e) for e in exclude[b] if e}
        if int(targets[b]) in excluded or int(targets[b]) not in corpus.tolist():
            ranks.append(math.inf)
            continue
        own = scores[b, corpus.tolist().index(int(targets[b]))]
        ahead = sum(
            1
            for x, item in enumerate(corpus.tolist())
            if item != int(targets[b]) and item not in excluded and scores[b, x] >= own
        )
        ranks.append(1.0 + ahead)
    return torch.tensor(ranks, dtype=torch.float64)


@pytest.mark.parametrize("chunk_size", [1, 5, 100])
def test_next_item_metrics_equal_full_sort(chunk_size: int) -> None:
    head = tiny_mol()
    corpus, table, datamodule, outputs = next_item_problem()
    evaluator = RetrievalEvaluator(NextItemJudge(ks=[1, 5, 10]), chunk_size=chunk_size, corpus_batch_size=7)
    logged = run_epoch(evaluator, FakeTrainer(datamodule), FakeModule(head, table), outputs, "test")
    with torch.no_grad():
        item_state = head.encode_items(table[corpus])
        ranks = torch.cat(
            [
                sorted_ranks(
                    head.score(head.encode_queries(o["queries"]), item_state),
                    corpus,
                    o["targets"],
                    o["exclude"],
                )
                for o in outputs
            ]
        )
        popularity = datamodule.item_popularity()[corpus].double()
        pop_ranks = torch.cat(
            [
                sorted_ranks(popularity.expand(len(o["targets"]), -1), corpus, o["targets"], o["exclude"])
                for o in outputs
            ]
        )
    assert math.isinf(ranks[1]) and ranks.isfinite().sum() >= 6
    for key, value in retrieval_metrics(ranks, [1, 5, 10]).items():
        assert logged[f"test/{key}"] == pytest.approx(value, abs=1e-12), key
    for key, value in retrieval_metrics(pop_ranks, [1, 5, 10]).items():
        assert logged[f"test/popularity/{key}"] == pytest.approx(value, abs=1e-12), key
    val = run_epoch(evaluator, FakeTrainer(datamodule), FakeModule(head, table), outputs, "val")
    assert not any("popularity" in key for key in val) and val["val/hr@10"] == logged["test/hr@10"]


class CountingHead(DotProductSimilarity):
    """A dot-product head that counts its ``score`` calls and the items they scored."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def score(self, query_state, item_state):  # type: ignore[override]
        self.calls.append(len(item_state))
        return super().score(query_state, item_state)


def test_each_corpus_chunk_is_scored_once_per_batch() -> None:
    corpus, table, datamodule, outputs = next_item_problem(num_items=23)
    table = torch.nn.functional.pad(table, (0, QUERY_DIM - ITEM_DIM))  # a dot head: item width = query width
    head = CountingHead()
    exact = ExactTopK(chunk_size=1000)
    evaluator = RetrievalEvaluator(NextItemJudge(ks=[5]), chunk_size=10, indexes={"exact": exact}, index_k=5)
    logged = run_epoch(evaluator, FakeTrainer(datamodule), FakeModule(head, table), outputs, "val")
    # Per batch: the evaluator's 3 chunks (10 + the targets beyond the first chunk, 10, 3), then the index's
    # own single call over all 23 items; nothing else.
    per_batch = head.calls[: len(head.calls) // len(outputs)]
    assert len(head.calls) == 4 * len(outputs) and per_batch[1:] == [10, 3, 23]
    assert 10 <= per_batch[0] <= 10 + len(outputs[0]["targets"])
    assert logged["val/exact/recall@5"] == pytest.approx(1.0)  # the index equals the exact top-k
    assert logged["val/exact/hr@5"] == pytest.approx(logged["val/hr@5"])
    assert logged["val/exact/exact_fallback_rate"] == 0.0


def test_exact_fallback_rate_is_logged_per_index() -> None:
    head = tiny_mol()
    corpus, table, datamodule, outputs = next_item_problem(num_items=23, batches=2)
    for o in outputs:  # 12 of the 23 items excluded for every query
        o["exclude"] = corpus[None, :12].expand(len(o["targets"]), -1)
    # 3 x 2 pairs x 1 candidate cannot fill k = 10: every query is answered by exact search.
    indexes = {"short": PerComponentTopK(k_per_pair=1), "wide": PerComponentTopK(k_per_pair=20)}
    evaluator = RetrievalEvaluator(NextItemJudge(ks=[5]), indexes=indexes, index_k=10)
    logged = run_epoch(evaluator, FakeTrainer(datamodule), FakeModule(head, table), outputs, "val")
    assert logged["val/short/exact_fallback_rate"] == 1.0
    assert logged["val/short/recall@10"] == pytest.approx(1.0)  # answered exactly: equals the exact top-k
    assert logged["val/wide/exact_fallback_rate"] == 0.0  # 20 candidates per pair cover what is left
    assert logged["val/wide/latency_ms"] > 0


def qrels_problem(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    passages = torch.randn(17, 6, generator=gen)
    datamodule = SimpleNamespace(corpus_item_ids=lambda: torch.arange(17))
    relevant = torch.tensor([[3, 7, -1], [0, -1, -1], [16, 2, 5], [9, -1, -1], [4, 11, -1]])
    grades = (relevant >= 0).float()
    grades[2, 0] = 2.0
    outputs = [
        {
            "queries": torch.randn(5, 6, generator=gen),
            "context": {},
            "relevant_ids": relevant,
            "relevant_grades": grades,
        }
    ]
    return passages, datamodule, outputs


@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_qrels_judge_ranks_match_sorting(chunk_size: int) -> None:
    head = DotProductSimilarity()
    passages, datamodule, outputs = qrels_problem()
    queries, relevant, grades = (
        outputs[0]["queries"],
        outputs[0]["relevant_ids"],
        outputs[0]["relevant_grades"],
    )
    scores = head.score(head.encode_queries(queries), head.encode_items(passages))
    # Every score gap is above 1e-5, so chunked rounding cannot change a rank on any CPU.
    assert scores.sort(dim=1).values.diff(dim=1).min() > 1e-5
    order = scores.argsort(dim=1, descending=True)
    ranks = torch.full(relevant.shape, math.inf, dtype=torch.float64)
    for b in range(5):
        for j in range(3):
            if relevant[b, j] >= 0:
                ranks[b, j] = (order[b] == relevant[b, j]).nonzero().item() + 1
    judge = QrelsJudge(recall_ks=[1, 5], ndcg_ks=[3], mrr_ks=[5])
    evaluator = RetrievalEvaluator(judge, chunk_size=chunk_size, indexes={"exact": ExactTopK()}, index_k=5)
    logged = run_epoch(evaluator, FakeTrainer(datamodule), FakeModule(head, passages), outputs, "test")
    expected = graded_metrics(ranks, grades, [1, 5], [3], [5])
    for key, value in expected.items():
        assert logged[f"test/{key}"] == pytest.approx(value, abs=1e-12), key
        assert logged[f"test/exact/{key}"] == pytest.approx(value, abs=1e-12), key  # the top-k path agrees
    assert logged["test/exact/overlap@5"] == pytest.approx(1.0)  # qrels keep recall@K for themselves


def test_judges_name_missing_outputs_and_bad_cutoffs() -> None:
    head = DotProductSimilarity()
    passages, datamodule, outputs = qrels_problem()
    evaluator = RetrievalEvaluator(NextItemJudge())
    with pytest.raises(ValueError, match="targets"):
        run_epoch(evaluator, FakeTrainer(datamodule), FakeModule(head, passages), outputs, "val")
    with pytest.raises(ValueError, match="recall_ks"):
        QrelsJudge(recall_ks=[0])
    with pytest.raises(ValueError, match="chunk_size"):
        RetrievalEvaluator(QrelsJudge(), chunk_size=0)


def test_faiss_fallback_is_logged_once_or_refused(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setattr(mips_module, "faiss_available", lambda: False)
    monkeypatch.setattr(mips_module, "_logged_fallbacks", set())
    with caplog.at_level(logging.WARNING, logger="rails.retrieval.mips"):
        first, second = FaissMIPS(), FaissMIPS(index="ivf")
    warnings = [r.getMessage() for r in caplog.records if "falls back" in r.getMessage()]
    assert len(warnings) == 1 and "faiss is not importable" in warnings[0]
    assert (
        first.fallback_reason
        == second.fallback_reason
        == "faiss is not importable (pip install faiss-cpu, or faiss-gpu)"
    )
    vectors = torch.randn(9, 4)
    first.build(vectors)
    assert first.search(vectors[:2], 3).shape == (2, 3)  # exact torch candidates
    with pytest.raises(ImportError, match="fallback=false"):
        FaissMIPS(fallback=False)
    with pytest.raises(ImportError, match="use_gpu=true"):
        FaissMIPS(use_gpu=True)


def test_16_bit_scores_are_warned_about_once(caplog) -> None:
    """A head whose evaluation scores are bf16 (a bf16-true model, an autocast evaluator) ranks with ties."""
    head = tiny_mol().to(torch.bfloat16)
    corpus, table, datamodule, outputs = next_item_problem()
    for o in outputs:
        o["queries"] = o["queries"].to(torch.bfloat16)
    evaluator = RetrievalEvaluator(NextItemJudge(ks=[5]))
    with caplog.at_level(logging.WARNING, logger="rails.retrieval.evaluator"):
        run_epoch(
            evaluator, FakeTrainer(datamodule), FakeModule(head, table.to(torch.bfloat16)), outputs, "val"
        )
        run_epoch(
            evaluator, FakeTrainer(datamodule), FakeModule(head, table.to(torch.bfloat16)), outputs, "val"
        )
    warned = [r.getMessage() for r in caplog.records if "16-bit scores tie" in r.getMessage()]
    assert len(warned) == 1 and "MoLSimilarity scores are torch.bfloat16" in warned[0]
    caplog.clear()
    fp32 = RetrievalEvaluator(NextItemJudge(ks=[5]))
    with caplog.at_level(logging.WARNING, logger="rails.retrieval.evaluator"):
        run_epoch(fp32, FakeTrainer(datamodule), FakeModule(tiny_mol(), table), outputs_fp32(outputs), "val")
    assert not [r for r in caplog.records if "16-bit" in r.getMessage()]


def test_an_autocast_evaluator_scores_16_bit_towers_in_float32(caplog) -> None:
    """``autocast=True`` (the QA preset): bf16 tower outputs under the trainer's bf16 context are scored by a
    float32 head in float32, exactly as the same (bf16-rounded) embeddings given in float32, and no warning."""
    corpus, table, datamodule, outputs = next_item_problem(seed=4)
    half = [{**o, "queries": o["queries"].to(torch.bfloat16)} for o in outputs]
    trainer = FakeTrainer(datamodule)
    trainer.precision_plugin = SimpleNamespace(
        forward_context=lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    )
    head = tiny_mol().eval()
    with caplog.at_level(logging.WARNING, logger="rails.retrieval.evaluator"):
        logged = run_epoch(
            RetrievalEvaluator(NextItemJudge(ks=[1, 5]), autocast=True),
            trainer,
            FakeModule(head, table.to(torch.bfloat16)),
            half,
            "val",
        )
    assert not [r for r in caplog.records if "16-bit" in r.getMessage()]
    rounded = FakeModule(head, table.to(torch.bfloat16).float())
    expected = run_epoch(RetrievalEvaluator(NextItemJudge(ks=[1, 5])), FakeTrainer(datamodule), rounded,
                         outputs_fp32(half), "val")  # fmt: skip
    assert logged == expected and logged


def outputs_fp32(outputs):
    return [{**o, "queries": o["queries"].float()} for o in outputs]
