"""Evaluation scores in full precision: bf16 scores tie, and the evaluator ranks ties against the target.

A head trained under bf16 (MoL's ``autocast_bf16``, a bf16 model's dot head) must not lose HR / NDCG at
evaluation to bf16 rounding: a cosine / 0.05 near 20 has a bf16 spacing of 0.125, so distinct items tie.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from rails.config import ConfigError
from rails.eval import evaluate, override_model
from rails.models.similarity import DotProductSimilarity, MoLSimilarity
from rails.retrieval.judges import target_ranks
from rails.train import run
from tests.conftest import TINY_OVERRIDES, compose_config, shrink


def unit_vectors(rows: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(rows, dim, generator=g, dtype=torch.float64), dim=-1)


def test_dot_head_scores_bf16_states_in_float32_when_evaluating() -> None:
    head = DotProductSimilarity(loss_temperature=0.05)
    query, items = unit_vectors(4, 32, 0), unit_vectors(3000, 32, 1)
    q_state = head.encode_queries(query.to(torch.bfloat16))
    x_state = head.encode_items(items.to(torch.bfloat16))
    reference = q_state.vectors.double() @ x_state.vectors.double().T  # float64 of the bf16 states
    head.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as an evaluator under the trainer's bf16 context
        scores = head.score(q_state, x_state)
        pairs = head.score_pairs(
            q_state, x_state.index(slice(0, 50)).gather(torch.zeros(4, 1, dtype=torch.long))
        )
    assert scores.dtype == torch.float32 and pairs.dtype == torch.float32
    torch.testing.assert_close(scores.double(), reference, rtol=0, atol=1e-5)
    head.train()
    assert head.score(q_state, x_state).dtype == torch.bfloat16  # training keeps the states' dtype


def test_bf16_states_of_a_dot_head_keep_their_ranks_when_evaluated() -> None:
    """Items close to the query (cosines ~0.95, scores ~19 after / 0.05): each query's 10th item ranks 10th
    from the eval-mode scores of bf16 states, and lower when the scores themselves are bf16 (ties count
    against it in :func:`target_ranks`)."""
    head = DotProductSimilarity(loss_temperature=0.05).eval()
    query = unit_vectors(8, 32, 2)
    items = torch.nn.functional.normalize(query.repeat(250, 1) + 0.3 * unit_vectors(2000, 32, 3), dim=-1)
    q_state = head.encode_queries(query.to(torch.bfloat16))
    x_state = head.encode_items(items.to(torch.bfloat16))

    def ranks(scores: torch.Tensor) -> torch.Tensor:
        tenth = scores.double().topk(10, dim=1).indices[:, 9]
        return target_ranks(lambda a, b: scores[:, a:b], 2000, tenth, scores.gather(1, tenth[:, None])[:, 0])

    evaluated = head.score(q_state, x_state) / 0.05
    assert evaluated.dtype == torch.float32 and (ranks(evaluated) == 10).all()
    assert (ranks(evaluated.to(torch.bfloat16)) > 10).float().mean() >= 0.5


def tiny_autocast_mol() -> MoLSimilarity:
    torch.manual_seed(0)
    return MoLSimilarity(query_dim=16, item_dim=16, num_query_components=2, num_item_components=2,
                         component_dim=8, query_hidden_dim=32, autocast_bf16=True)  # fmt: skip


def test_mol_autocast_is_for_training_unless_asked_for_evaluation() -> None:
    head = tiny_autocast_mol()
    fp32 = tiny_autocast_mol()
    fp32.autocast_bf16 = False
    query, items = unit_vectors(5, 16, 4).float(), unit_vectors(40, 16, 5).float()
    head.train()
    assert head.score(head.encode_queries(query), head.encode_items(items)).dtype == torch.bfloat16
    head.eval(), fp32.eval()
    with torch.no_grad():
        evaluated = head.score(head.encode_queries(query), head.encode_items(items))
        expected = fp32.score(fp32.encode_queries(query), fp32.encode_items(items))
        assert evaluated.dtype == torch.float32
        torch.testing.assert_close(evaluated, expected)  # the same function, the same precision
        head.eval_autocast_bf16 = True
        assert head.score(head.encode_queries(query), head.encode_items(items)).dtype == torch.bfloat16


def test_model_overrides_merge_new_leaves_and_name_a_missing_parent() -> None:
    stored = OmegaConf.create({"similarity": {"_target_": "x.MoL", "autocast_bf16": True}, "lr": 1.0})
    merged = override_model(stored, {"similarity": {"eval_autocast_bf16": True}, "lr": 2.0}, "run.ckpt")
    assert (
        merged.similarity.eval_autocast_bf16 is True and merged.lr == 2.0 and merged.similarity.autocast_bf16
    )
    assert override_model(stored, {}, "run.ckpt") is stored
    with pytest.raises(
        ConfigError, match=r"model_overrides\.simliarity\.x: .* run\.ckpt has no 'simliarity'"
    ):
        override_model(stored, {"simliarity": {"x": 1}}, "run.ckpt")


def test_eval_model_overrides_change_the_rebuilt_head(tmp_path: Path) -> None:
    """rails-eval of a bf16-autocast MoL run: fp32 scoring by default, the old bf16 scoring on request."""
    mol = ["model/similarity=mol", "model.similarity.autocast_bf16=true", "model.similarity.num_query_components=2",
           "model.similarity.num_item_components=2", "model.similarity.component_dim=8"]  # fmt: skip
    trained = run(shrink(compose_config("train", [*TINY_OVERRIDES, *mol]), tmp_path / "train"))
    GlobalHydra.instance().clear()
    ckpt = next((tmp_path / "train" / "run" / "checkpoints").glob("epoch_*.ckpt"))
    results = {}
    for name, extra in (("fp32", []), ("bf16", ["+model_overrides.similarity.eval_autocast_bf16=true"])):
        cfg = compose_config(
            "eval", [f"ckpt_path={ckpt}", "trainer.accelerator=cpu", "stages=[test]", *extra]
        )
        cfg = shrink(cfg, tmp_path / name)
        with open_dict(cfg):
            cfg.trainer.enable_progress_bar = False
        results[name] = evaluate(cfg)
        GlobalHydra.instance().clear()
    assert results["fp32"]["test/hr@10"] == pytest.approx(trained["test/hr@10"], abs=1e-6)
    assert set(results["bf16"]) == set(results["fp32"])
    bad = compose_config(
        "eval", [f"ckpt_path={ckpt}", "trainer.accelerator=cpu", "+model_overrides.nope.x=1"]
    )
    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError, match="model_overrides.nope.x"):
        evaluate(shrink(bad, tmp_path / "bad"))
    typo = ["+model_overrides.similarity.eval_autocst_bf16=true"]
    bad = compose_config("eval", [f"ckpt_path={ckpt}", "trainer.accelerator=cpu", *typo])
    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError, match="model.similarity.eval_autocst_bf16"):
        evaluate(shrink(bad, tmp_path / "typo"))
