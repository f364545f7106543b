"""MoLWithCosine: a MoL checkpoint scored as MoL + w * cos / tau (float64 reference), through rails-eval too."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rails.config import ConfigError
from rails.models.similarity.mol import MoLSimilarity
from rails.models.similarity.mol_cosine import MoLWithCosine, cosine_weight_of
from rails.retrieval.indexes.approximate import CombinedTopK
from rails.retrieval.indexes.exact import ExactTopK, fused_mol_unsupported
from tests.conftest import eval_checkpoint, train_tiny_checkpoint

ARGS = {"query_dim": 10, "item_dim": 10, "num_query_components": 3, "num_item_components": 2,
        "component_dim": 8, "query_hidden_dim": 16, "gating_query_hidden_dim": 8,
        "gating_item_hidden_dim": 8, "gating_qi_hidden_dim": 8, "uid_hash_sizes": [7]}  # fmt: skip


def _pair(**blend: float) -> tuple[MoLSimilarity, MoLWithCosine]:
    """A random MoL head in float64 and the blend head with its weights (the same keys: a checkpoint loads)."""
    torch.manual_seed(0)
    mol = MoLSimilarity(**ARGS).double().eval()
    blended = MoLWithCosine(**ARGS, **blend).double().eval()
    blended.load_state_dict(mol.state_dict())
    return mol, blended


def _cosine(queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(items, dim=-1).T


@pytest.mark.parametrize(
    ("mol_weight", "cosine_weight", "tau"), [(1.0, 1.0, 0.05), (0.5, 2.0, 0.1), (0.0, 1.0, 0.05)]
)
def test_scores_are_the_weighted_sum_in_float64(mol_weight: float, cosine_weight: float, tau: float) -> None:
    mol, blended = _pair(mol_weight=mol_weight, cosine_weight=cosine_weight, cosine_temperature=tau)
    queries, items = torch.randn(5, 10, dtype=torch.float64), torch.randn(9, 10, dtype=torch.float64)
    users = torch.arange(5)
    expected = cosine_weight * _cosine(queries, items) / tau
    if mol_weight:
        mol_scores = mol.score(mol.encode_queries(queries, user_ids=users), mol.encode_items(items))
        expected = expected + mol_weight * mol_scores
    query_state = blended.encode_queries(queries, user_ids=users)
    got = blended.score(query_state, blended.encode_items(items))
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-6)
    per_query = items[None].expand(5, -1, -1)  # each query against its own (here equal) items
    pairs = blended.score_pairs(query_state, blended.encode_items(per_query))
    torch.testing.assert_close(pairs.double(), expected, rtol=1e-6, atol=1e-6)


def test_bad_blends_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="cosine_temperature=0"):
        MoLWithCosine(**ARGS, cosine_temperature=0)
    with pytest.raises(ValueError, match=r"cosine_weight=0.0: must be > 0 when mol_weight is 0"):
        MoLWithCosine(**ARGS, mol_weight=0.0, cosine_weight=0.0)
    with pytest.raises(ValueError, match="mol_weight=-1"):
        MoLWithCosine(**ARGS, mol_weight=-1.0)
    with pytest.raises(ValueError, match="item_dim=8: must equal query_dim"):
        MoLWithCosine(**{**ARGS, "item_dim": 8})


def test_the_fused_mol_kernel_is_not_used_for_it() -> None:
    _, blended = _pair()
    queries, items = torch.randn(2, 10, dtype=torch.float64), torch.randn(5, 10, dtype=torch.float64)
    state = blended.encode_queries(queries, user_ids=torch.arange(2))
    assert "scores other than MoLSimilarity" in fused_mol_unsupported(
        blended, state, blended.encode_items(items), 5
    )


def test_indexes_rank_by_the_blend() -> None:
    """Exact search scores every item with the blend; an approximate index takes candidates from the MoL states
    and re-scores them with the blend, so a budget covering the corpus returns the exact blend's top k."""
    mol, blended = _pair(cosine_weight=2.0)
    queries, items = torch.randn(4, 10, dtype=torch.float64), torch.randn(30, 10, dtype=torch.float64)
    users, ids = torch.arange(4), torch.arange(100, 130)
    expected = blended.score(blended.encode_queries(queries, user_ids=users), blended.encode_items(items))
    top_scores, top_rows = expected.topk(5, dim=1)
    exact = ExactTopK(chunk_size=7).build(blended, items, ids)
    approximate = CombinedTopK(k_per_pair=30, num_candidates=30, fallback_chunk_size=7).build(
        blended, items, ids
    )
    for index in (exact, approximate):
        scores, found = index.search(queries, 5, user_ids=users)
        torch.testing.assert_close(scores.double(), top_scores, rtol=1e-6, atol=1e-6)
        assert torch.equal(found, ids[top_rows])
    mol_scores, _ = ExactTopK(chunk_size=7).build(mol, items, ids).search(queries, 5, user_ids=users)
    assert not torch.allclose(mol_scores.double(), top_scores)  # the blend is not MoL's ranking


@pytest.fixture(scope="module")
def mol_dot_loss_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny one-epoch MoL run trained with the dot head's loss."""
    overrides = ["model/similarity=mol", "model.dot_loss_weight=1.0"]
    return train_tiny_checkpoint(tmp_path_factory.mktemp("trained"), overrides)


def test_rails_eval_scores_a_checkpoint_with_the_blend(mol_dot_loss_checkpoint: Path, tmp_path: Path) -> None:
    target = "+model_overrides.similarity._target_=rails.models.similarity.mol_cosine.MoLWithCosine"
    plain = eval_checkpoint(mol_dot_loss_checkpoint, tmp_path / "plain", [])
    mol_only = eval_checkpoint(
        mol_dot_loss_checkpoint, tmp_path / "mol", [target, "+model_overrides.similarity.cosine_weight=0.0"]
    )
    for name, value in plain.items():  # cosine weight 0: MoL's own metrics
        assert mol_only[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    cosine = eval_checkpoint(
        mol_dot_loss_checkpoint, tmp_path / "cos", [target, "+model_overrides.similarity.mol_weight=0.0"]
    )
    assert cosine.keys() == plain.keys()
    assert any(abs(cosine[k] - plain[k]) > 1e-6 for k in plain if k.startswith("test/")), (
        "cosine == MoL ranking"
    )
    with pytest.raises(ConfigError, match="cosine_temperature=-1.0"):
        eval_checkpoint(
            mol_dot_loss_checkpoint,
            tmp_path / "bad",
            [target, "+model_overrides.similarity.cosine_temperature=-1.0"],
        )


def test_cosine_weight_of_configs_and_heads() -> None:
    target = "rails.models.similarity.mol_cosine.MoLWithCosine"
    assert cosine_weight_of({"_target_": target}) == 1.0  # the class default
    assert cosine_weight_of({"_target_": target, "cosine_weight": 0.5}) == 0.5
    assert (
        cosine_weight_of({"_target_": "rails.models.similarity.mol.MoLSimilarity", "cosine_weight": 2.0})
        == 0.0
    )
    mol, blended = _pair(cosine_weight=0.25)
    assert (cosine_weight_of(mol), cosine_weight_of(blended), cosine_weight_of(None)) == (0.0, 0.25, 0.0)


@pytest.fixture(scope="module")
def blend_trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny one-epoch run of a MoL head trained with the dot loss and ranking by the blend throughout."""
    overrides = ["model/similarity=mol", "model/similarity_blend=cosine", "model.dot_loss_weight=1.0",
                 "model.dot_loss_temperature=0.1"]  # fmt: skip
    return train_tiny_checkpoint(tmp_path_factory.mktemp("blend"), overrides)


def test_a_run_trained_with_the_blend_group_ranks_by_the_blend(
    blend_trained_checkpoint: Path, tmp_path: Path
) -> None:
    checkpoint = torch.load(blend_trained_checkpoint, map_location="cpu", weights_only=False)
    similarity = checkpoint["rails_config"]["model"]["similarity"]
    assert similarity["_target_"].endswith(".MoLWithCosine")
    assert similarity["cosine_temperature"] == pytest.approx(
        0.1
    )  # interpolated from model.dot_loss_temperature
    blend = eval_checkpoint(blend_trained_checkpoint, tmp_path / "blend", [])
    mol_only = eval_checkpoint(
        blend_trained_checkpoint, tmp_path / "mol", ["+model_overrides.similarity.cosine_weight=0.0"]
    )
    assert blend.keys() == mol_only.keys()
    assert any(abs(blend[k] - mol_only[k]) > 1e-6 for k in blend if k.startswith("test/")), "blend == MoL"
