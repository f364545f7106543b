"""The evaluation callback with configured approximate indexes, through the Hydra configs."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from rails.config import check_config
from rails.retrieval import (
    AverageTopK,
    CombinedTopK,
    FaissMIPS,
    NextItemJudge,
    PerComponentTopK,
    RetrievalEvaluator,
    TorchMIPS,
)
from rails.train import run
from tests.conftest import TINY_OVERRIDES, compose_config, shrink

MOL_TINY = [
    "model/similarity=mol",
    "model.similarity.num_query_components=3",
    "model.similarity.num_item_components=2",
    "model.similarity.component_dim=8",
    "model.similarity.query_hidden_dim=16",
    "model.similarity.uid_hash_sizes=[]",
    "model.similarity.gating_query_hidden_dim=8",
    "model.similarity.gating_item_hidden_dim=8",
    "model.similarity.gating_qi_hidden_dim=8",
    "model.loss.temperature=1.0",
    "+model.aux_loss_weights.mi_loss=0.001",
]


@pytest.mark.parametrize("option", ["mol_approx", "mol_faiss"])
def test_retrieval_configs_compose_and_instantiate(option, tmp_path: Path):
    cfg = shrink(compose_config("train", [*TINY_OVERRIDES, f"retrieval={option}"]), tmp_path)
    check_config(cfg)
    evaluator = hydra.utils.instantiate(cfg.retrieval.evaluator)
    GlobalHydra.instance().clear()
    assert isinstance(evaluator, RetrievalEvaluator) and evaluator.index_k == 100
    assert isinstance(evaluator.judge, NextItemJudge) and evaluator.judge.ks == [10, 50, 200]
    kinds = {type(index) for index in evaluator.indexes.values()}
    assert kinds <= {PerComponentTopK, AverageTopK, CombinedTopK} and kinds
    if option == "mol_approx":
        assert set(evaluator.indexes) == {"per_pair", "avg", "comb"}
        assert evaluator.indexes["avg"].average.num_candidates == 500
        backend = evaluator.indexes["avg"].average.mips()
        assert isinstance(backend, TorchMIPS) and backend.dtype == torch.bfloat16
    else:
        assert isinstance(evaluator.indexes["avg_flat"].average.mips(), (FaissMIPS,))


def test_sweep_style_override_of_an_index_budget(tmp_path: Path):
    cfg = compose_config(
        "train", [*TINY_OVERRIDES, "retrieval=mol_approx", "retrieval.evaluator.indexes.avg.num_candidates=7"]
    )
    evaluator = hydra.utils.instantiate(shrink(cfg, tmp_path).retrieval.evaluator)
    GlobalHydra.instance().clear()
    assert evaluator.indexes["avg"].average.num_candidates == 7


def test_bad_index_config_is_rejected():
    with pytest.raises(ValueError, match="index_k"):
        RetrievalEvaluator(index_k=0)
    with pytest.raises(ValueError, match="indexes.bad"):
        RetrievalEvaluator(indexes={"bad": object()})
    with pytest.raises(ValueError, match="judge"):
        RetrievalEvaluator(judge=object())
    with pytest.raises(ValueError, match="ks"):
        NextItemJudge(ks=[0])


def test_training_run_logs_approximate_index_metrics(tmp_path: Path):
    overrides = [
        *TINY_OVERRIDES,
        *MOL_TINY,
        "retrieval=mol_approx",
        "retrieval.evaluator.index_k=20",
        "retrieval.evaluator.indexes.per_pair.mips.dtype=null",
        "retrieval.evaluator.indexes.avg.num_candidates=1000",  # covers the 200-item corpus: exact
        "retrieval.evaluator.judge.ks=[10,50]",
    ]
    cfg = shrink(compose_config("train", overrides), tmp_path)
    metrics = run(cfg)
    GlobalHydra.instance().clear()
    for name in ("per_pair", "avg", "comb"):
        for key in ("hr@10", "ndcg@10", "mrr", "recall@20", "exact_fallback_rate", "latency_ms"):
            assert f"test/{name}/{key}" in metrics and f"val/{name}/{key}" in metrics, (name, key)
        assert f"test/{name}/hr@50" not in metrics  # above index_k
        assert 0.0 <= metrics[f"test/{name}/recall@20"] <= 1.0
        assert 0.0 <= metrics[f"test/{name}/exact_fallback_rate"] <= 1.0
        assert metrics[f"test/{name}/latency_ms"] > 0
    # A candidate budget covering the corpus reproduces the exact ranking, up to ties: the candidates are
    # re-scored in other batch shapes, so a near-tie may flip on another CPU. 0.01 allows one flipped query
    # of the 120, far below what a wrong ranking costs.
    assert metrics["test/avg/recall@20"] == pytest.approx(1.0, abs=0.01)
    assert metrics["test/avg/hr@10"] == pytest.approx(metrics["test/hr@10"], abs=0.01)
    assert metrics["test/avg/ndcg@10"] == pytest.approx(metrics["test/ndcg@10"], abs=0.01)
