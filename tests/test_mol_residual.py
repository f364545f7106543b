"""MoL with residual components (``model.similarity.residual_components``): every component is the embedding
plus a learned map that starts at zero, so the untrained head is the dot head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rails.models.similarity.dot_product import DotProductSimilarity
from rails.models.similarity.mol import MoLSimilarity
from rails.models.similarity.mol_sampled import encode_sampled_items, gather_sampled, sampled_logits
from tests.conftest import assert_same_first_step, tiny_model

DIM = 8


def _head(p_q: int, p_x: int, **kwargs: object) -> MoLSimilarity:
    """A float64 head of width DIM, residual components unless ``residual_components=False`` is given."""
    torch.manual_seed(0)
    return MoLSimilarity(
        query_dim=DIM, item_dim=DIM, num_query_components=p_q, num_item_components=p_x, component_dim=DIM,
        query_hidden_dim=16, gating_query_hidden_dim=6, gating_item_hidden_dim=6, gating_qi_hidden_dim=6,
        **({"residual_components": True} | kwargs),
    ).double()  # fmt: skip


def _inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(5, DIM, generator=gen, dtype=torch.float64), torch.randn(
        7, DIM, generator=gen, dtype=torch.float64
    )


@pytest.mark.parametrize(("p_q", "p_x", "identity"), [(1, 1, False), (4, 3, False), (4, 3, True)])
def test_untrained_residual_head_scores_as_the_dot_head(p_q: int, p_x: int, identity: bool) -> None:
    """At initialisation every pair is cos(q, x) / tau, so any mixture of them is too (train and eval)."""
    head = _head(p_q, p_x, identity_components=identity, item_dropout=0.0, softmax_dropout=0.0)
    queries, items = _inputs(1)
    expected = DotProductSimilarity(normalize=True)(queries, items).scores / head.temperature
    torch.testing.assert_close(head.train()(queries, items).scores, expected)
    head.eval()
    torch.testing.assert_close(head.score(head.encode_queries(queries), head.encode_items(items)), expected)


def test_components_are_the_embedding_plus_the_learned_map() -> None:
    head = _head(3, 2, item_dropout=0.0).eval()
    with torch.no_grad():
        for param in head.parameters():
            param.add_(0.3 * torch.randn_like(param))
    queries, items = _inputs(2)
    mlp, proj = head.query_components, head.item_components
    assert mlp.output_layer.weight.abs().sum() > 0  # the perturbation reached the zero-initialised maps
    expected_q = torch.nn.functional.normalize(
        queries[:, None] + mlp.net(queries).unflatten(-1, (3, DIM)), dim=-1
    )
    expected_x = torch.nn.functional.normalize(
        items[:, None] + proj.proj(items).unflatten(-1, (2, DIM)), dim=-1
    )
    torch.testing.assert_close(head.encode_queries(queries).components, expected_q)
    torch.testing.assert_close(head.encode_items(items).components, expected_x)


@pytest.mark.parametrize(("identity", "residual"), [(False, True), (True, True), (True, False)])
@pytest.mark.parametrize("train", [True, False])
def test_factorised_training_logits_of_identity_and_residual_components(
    train: bool, identity: bool, residual: bool
) -> None:
    """The sampled path's rows [x', 1, x] (item dropout on) / [x, 1] (off): with residual components, factors
    [W | b | I] / [W + I | b] give the logits of x + W x' + b; an identity component 0 reads the undropped x
    (factor [0 | 0 | I]); checked against the components for the same dropout draw."""
    p_x = 3 if identity else 2
    head = _head(
        3,
        p_x,
        item_dropout=0.5,
        softmax_dropout=0.0,
        identity_components=identity,
        residual_components=residual,
    ).train(train)
    projection = head.item_components.rest if identity else head.item_components
    if residual:  # learned maps away from their zero start
        with torch.no_grad():
            projection.proj.weight.normal_()
            projection.proj.bias.normal_()
    gen = torch.Generator().manual_seed(4)
    table = torch.randn(9, DIM, generator=gen, dtype=torch.float64)
    queries = torch.randn(5, DIM, generator=gen, dtype=torch.float64)
    positions = torch.randint(0, 9, (5, 4), generator=gen)
    torch.manual_seed(7)
    items = encode_sampled_items(head, table)
    assert items.rows.shape == (9, 2 * DIM + 1 if train else DIM + 1) and items.inv_norms.shape == (9, p_x)
    query_components = head.encode_queries(queries).components
    logits = sampled_logits(head, query_components, gather_sampled(items, positions))

    torch.manual_seed(7)  # the same item dropout draw, through the components
    dropped = projection.dropout(table)
    components = projection.proj(dropped).unflatten(-1, (2, DIM))
    if residual:
        components = table[:, None] + components
    if identity:
        components = torch.cat([table[:, None], components], dim=1)
    components = torch.nn.functional.normalize(components, dim=-1)[positions]  # (5, 4, P_X, DIM)
    expected = torch.einsum("mid,mxjd->mxij", query_components, components).flatten(-2) / head.temperature
    torch.testing.assert_close(logits, expected, rtol=1e-10, atol=1e-10)
    if train:  # the dropout did act on the projected components
        assert not torch.equal(dropped, table)


def test_the_config_key_trains_a_step_and_moves_the_maps_off_zero(tmp_path: Path) -> None:
    torch.manual_seed(0)
    overrides = [
        "model/similarity=mol",
        "model.similarity.residual_components=true",
        "model.similarity.component_dim=16",
    ]
    model, loader = tiny_model(tmp_path, overrides)  # component_dim = the tiny item_dim
    head = model.similarity
    assert head.query_components.output_layer.weight.abs().sum() == 0
    assert head.item_components.proj.weight.abs().sum() == 0
    model.train()
    loss, _ = model.training_loss(next(iter(loader)))
    loss.backward()
    assert torch.isfinite(loss)
    # the zero output layers get a gradient (their input is non-zero), so training moves them off zero
    assert head.query_components.output_layer.weight.grad.abs().sum() > 0
    assert head.item_components.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("query_norm", ["l2", "layer_norm"])
def test_untrained_residual_module_trains_its_first_step_as_the_dot_head(
    tmp_path: Path, query_norm: str
) -> None:
    """4x2 residual MoL, same encoder and items as a dot-head module: at initialisation every pair is the dot
    logit, so the first step's loss and encoder / item gradients are the dot head's (mixture weights move
    nothing while the pairs are equal; MI loss and softmax dropout off, fp32 head, no user-id components)."""
    torch.manual_seed(0)
    dot, loader = tiny_model(
        tmp_path / "dot", ["model/similarity=dot", f"model.similarity.query_norm={query_norm}"]
    )
    mol, _ = tiny_model(
        tmp_path / "mol",
        ["model/similarity=mol", "model.similarity.residual_components=true", "model.similarity.component_dim=16",
         "model.similarity.num_query_components=4", "model.similarity.num_item_components=2",
         "model.similarity.uid_hash_sizes=[]", "model.similarity.softmax_dropout=0.0",
         "model.similarity.mi_loss_weight=0.0", "model.similarity.autocast_bf16=false",
         f"model.similarity.query_norm={query_norm}"],
    )  # fmt: skip
    assert_same_first_step(dot, mol, next(iter(loader)))
