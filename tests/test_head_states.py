"""Typed head states (index / gather / cat / to, shape checks) and the MoL mixing values kernels receive."""

from __future__ import annotations

import pytest
import torch

from rails.models.similarity import DotProductSimilarity, DotState, MoLItemState, MoLQueryState, MoLSimilarity


def test_state_operations_act_on_every_field_along_the_leading_dims() -> None:
    state = MoLItemState(torch.randn(7, 2, 4), torch.randn(7, 6))
    assert len(state) == 7 and state.lead_shape == (7,)
    chunk = state.index(slice(2, 5))
    assert isinstance(chunk, MoLItemState) and chunk.lead_shape == (3,)
    torch.testing.assert_close(chunk.gate, state.gate[2:5])
    picked = state.gather(torch.tensor([[0, 6], [3, 3]]))  # per-query candidates: (B, K, ...)
    assert picked.lead_shape == (2, 2) and picked.components.shape == (2, 2, 2, 4)
    torch.testing.assert_close(picked.components[1, 0], state.components[3])
    pairs = picked.index((slice(None), slice(0, 1)))  # chunk of per-query items
    assert pairs.lead_shape == (2, 1)
    joined = MoLItemState.cat([state.index(slice(0, 3)), state.index(slice(3, 7))])
    torch.testing.assert_close(joined.components, state.components)
    halved = state.to(torch.bfloat16)
    assert halved.components.dtype == halved.gate.dtype == torch.bfloat16


def test_state_shapes_and_kinds_are_checked() -> None:
    with pytest.raises(ValueError, match="leading dims"):
        MoLItemState(torch.randn(7, 2, 4), torch.randn(6, 6))
    with pytest.raises(ValueError, match="trailing"):
        DotState(torch.randn(5))
    with pytest.raises(ValueError, match="types"):
        MoLItemState.cat([MoLQueryState(torch.randn(1, 2, 4), torch.randn(1, 6))])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="integer"):
        DotState(torch.randn(3, 4)).gather(torch.tensor([0.0]))


def test_heads_return_typed_states() -> None:
    dot = DotProductSimilarity()
    assert isinstance(dot.encode_items(torch.randn(4, 3)), DotState)
    assert dot.encode_queries(torch.randn(2, 3)).vectors.shape == (2, 3)


def test_mol_mixing_carries_the_gating_of_the_mixture_step() -> None:
    torch.manual_seed(0)
    head = MoLSimilarity(
        query_dim=6,
        item_dim=5,
        num_query_components=3,
        num_item_components=2,
        component_dim=4,
        query_hidden_dim=8,
        gating_qi_hidden_dim=7,
        temperature=0.1,
    ).eval()
    mixing = head.mixing()
    assert (mixing.temperature, mixing.combination, mixing.training) == (0.1, "glu_silu", False)
    assert mixing.qi_hidden_weight.shape == (7, 6) and mixing.qi_out_weight.shape == (6, 7)
    assert mixing.hidden_dim == 7 and not mixing.qi_hidden_weight.requires_grad
    # The mixture step recomputed from the states and the mixing values equals the head's scores.
    qs, is_ = head.encode_queries(torch.randn(2, 6)), head.encode_items(torch.randn(9, 5))
    logits = torch.einsum("bid,xjd->bxij", qs.components, is_.components).flatten(-2) / mixing.temperature
    hidden = torch.nn.functional.silu(logits @ mixing.qi_hidden_weight.T + mixing.qi_hidden_bias)
    qi = hidden @ mixing.qi_out_weight.T + mixing.qi_out_bias
    gate = torch.nn.functional.silu(qs.gate[:, None] * is_.gate[None] + qi)
    expected = (torch.softmax(gate, dim=-1) * logits).sum(-1)
    torch.testing.assert_close(head.score(qs, is_), expected, rtol=1e-5, atol=1e-5)
    assert head.train().mixing().training
