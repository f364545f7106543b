"""MoL with identity components (``model.similarity.identity_components``): pair 0 is the dot head's logit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rails.checks import ArgumentError
from rails.models.similarity.dot_product import DotProductSimilarity
from rails.models.similarity.mol import MoLSimilarity
from rails.models.similarity.mol_components import ItemComponentProjection, QueryComponentMLP
from tests.conftest import assert_same_first_step, tiny_model

DIM = 8


def _head(p_q: int, p_x: int, **kwargs: object) -> MoLSimilarity:
    torch.manual_seed(0)
    return MoLSimilarity(
        query_dim=DIM, item_dim=DIM, num_query_components=p_q, num_item_components=p_x, component_dim=DIM,
        query_hidden_dim=16, gating_query_hidden_dim=6, gating_item_hidden_dim=6, gating_qi_hidden_dim=6,
        identity_components=True, **kwargs,
    ).double()  # fmt: skip


def test_one_by_one_identity_head_is_the_dot_head() -> None:
    """1x1 with identity components: the mixture has one pair, the cosine / tau of the raw embeddings."""
    head = _head(1, 1, item_dropout=0.5, softmax_dropout=0.0).train()
    assert not any(isinstance(m, (QueryComponentMLP, ItemComponentProjection)) for m in head.modules())
    gen = torch.Generator().manual_seed(1)
    queries = torch.randn(5, DIM, generator=gen, dtype=torch.float64)
    items = torch.randn(7, DIM, generator=gen, dtype=torch.float64)
    expected = DotProductSimilarity(normalize=True)(queries, items).scores / head.temperature
    torch.testing.assert_close(
        head(queries, items).scores, expected
    )  # training: the item dropout is not on it
    head.eval()
    torch.testing.assert_close(head.score(head.encode_queries(queries), head.encode_items(items)), expected)


def test_component_zero_is_the_normalised_embedding_and_the_rest_are_learned() -> None:
    head = _head(3, 2, uid_hash_sizes=[5], item_dropout=0.3).train()
    gen = torch.Generator().manual_seed(2)
    queries = torch.randn(4, DIM, generator=gen, dtype=torch.float64)
    items = torch.randn(6, DIM, generator=gen, dtype=torch.float64)
    query_state = head.encode_queries(queries, user_ids=torch.arange(4))
    item_state = head.encode_items(items)
    assert query_state.components.shape == (4, 3, DIM) and item_state.components.shape == (6, 2, DIM)
    torch.testing.assert_close(query_state.components[:, 0], torch.nn.functional.normalize(queries, dim=-1))
    torch.testing.assert_close(item_state.components[:, 0], torch.nn.functional.normalize(items, dim=-1))
    # component 1 of the query comes from the MLP (one component), component 2 is the user-id table
    mlp = head.query_components.rest
    assert isinstance(mlp, QueryComponentMLP) and mlp.num_components == 1
    expected = torch.nn.functional.normalize(mlp(queries)[:, 0], dim=-1)
    torch.testing.assert_close(query_state.components[:, 1], expected)
    assert head.item_components.rest.num_components == 1


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"component_dim": 4}, "needs equal widths"),
        ({"item_components": torch.nn.Identity()}, "needs the default component functions"),
    ],
)
@pytest.mark.parametrize("key", ["identity_components", "residual_components"])
def test_identity_and_residual_components_refuse_what_they_cannot_build(
    kwargs: dict, needle: str, key: str
) -> None:
    args = {"query_dim": DIM, "item_dim": DIM, "component_dim": DIM, key: True} | kwargs
    with pytest.raises(ArgumentError, match=needle) as error:
        MoLSimilarity(**args)  # type: ignore[arg-type]
    assert key in str(error.value)


def test_the_config_key_trains_a_step(tmp_path: Path) -> None:
    torch.manual_seed(0)
    overrides = [
        "model/similarity=mol",
        "model.similarity.identity_components=true",
        "model.similarity.component_dim=16",
    ]
    model, loader = tiny_model(tmp_path, overrides)  # component_dim = the tiny item_dim
    model.train()
    loss, _ = model.training_loss(next(iter(loader)))
    loss.backward()
    assert torch.isfinite(loss)
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("similarity.query_components.rest.") for n in grads)
    assert any(n.startswith("items.") for n in grads)


def test_identity_gate_bias_starts_the_mixture_on_pair_zero() -> None:
    """8x4x64 with the default gating widths on random inputs: pair 0 (1 of 32) gets about its share without
    the bias and most of the weight with a bias of 5."""
    from rails.models.similarity.mol_usage import pair_weights

    gen = torch.Generator().manual_seed(5)
    queries = torch.randn(16, 64, generator=gen, dtype=torch.float64)
    items = torch.randn(32, 64, generator=gen, dtype=torch.float64)
    share = []
    for bias in (0.0, 5.0):
        torch.manual_seed(0)
        head = MoLSimilarity(
            query_dim=64, item_dim=64, num_query_components=8, num_item_components=4, component_dim=64,
            identity_components=True, identity_gate_bias=bias,
        ).double().eval()  # fmt: skip
        with torch.no_grad():
            weights, _ = pair_weights(head, head.encode_queries(queries), head.encode_items(items))
        share.append(float(weights[..., 0].mean()))
    assert share[0] < 0.06 and share[1] > 0.4, share


def test_identity_gate_bias_needs_identity_components() -> None:
    with pytest.raises(ArgumentError, match="identity_gate_bias"):
        MoLSimilarity(query_dim=DIM, item_dim=DIM, component_dim=DIM, identity_gate_bias=1.0)


def test_one_by_one_identity_head_in_fp32_with_l2_trains_as_the_dot_head(tmp_path: Path) -> None:
    """The module-level claim behind round 17's control screen: MoL 1x1 with identity components, no softmax
    dropout, fp32 head and L2 query normalisation gives the dot head's training loss and gradients (its recipe:
    loss temperature 1 on cosine / tau_MoL = cosine / 0.05; the MI loss of one pair is 0)."""
    torch.manual_seed(0)
    dot, loader = tiny_model(tmp_path / "dot", ["model/similarity=dot"])
    mol, _ = tiny_model(
        tmp_path / "mol",
        ["model/similarity=mol", "model.similarity.identity_components=true", "model.similarity.component_dim=16",
         "model.similarity.num_query_components=1", "model.similarity.num_item_components=1",
         "model.similarity.uid_hash_sizes=[]", "model.similarity.softmax_dropout=0.0",
         "model.similarity.autocast_bf16=false", "model.similarity.query_norm=l2"],
    )  # fmt: skip
    assert_same_first_step(dot, mol, next(iter(loader)))


def test_learned_components_unwrap_the_identity_component() -> None:
    from torch import nn

    from rails.models.similarity.mol_components import WithIdentityComponent, learned_components

    rest = nn.Linear(4, 8)
    assert learned_components(WithIdentityComponent(4, rest)) == (rest, True)
    assert learned_components(WithIdentityComponent(4, None)) == (None, True)
    assert learned_components(rest) == (rest, False)
