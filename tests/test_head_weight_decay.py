"""model.head_weight_decay: the similarity head's parameters in an AdamW group of their own."""

from __future__ import annotations

import functools

import pytest
import torch

from rails.models.encoders.sasrec import SASRec
from rails.models.losses.negatives import UniformNegatives
from rails.models.losses.sampled_softmax import SampledSoftmaxLoss
from rails.models.retrieval_module import RetrievalModule
from rails.models.similarity.mol import MoLSimilarity
from tests.conftest import compose_config


def _module(head_weight_decay: float | None, weight_decay: float = 0.0) -> RetrievalModule:
    torch.manual_seed(0)
    head = MoLSimilarity(query_dim=8, item_dim=8, num_query_components=2, component_dim=4, query_hidden_dim=8)
    return RetrievalModule(
        SASRec(dim=8, max_seq_len=6, num_blocks=1, ffn_hidden_dim=8),
        head,
        SampledSoftmaxLoss(),
        UniformNegatives(num_negatives=4),
        optimizer=functools.partial(torch.optim.AdamW, lr=0.1, weight_decay=weight_decay),
        num_items=10,
        item_dim=8,
        head_weight_decay=head_weight_decay,
    )


def _step_with_zero_gradients(module: RetrievalModule) -> dict[str, torch.Tensor]:
    """One AdamW step with every gradient 0: the Adam update is 0, only the decoupled decay moves a weight."""
    optimizer = module.configure_optimizers()
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    for p in module.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    return {
        name: p.detach() / before[name]
        for name, p in module.named_parameters()
        if before[name].abs().min() > 0
    }


def test_only_the_head_decays() -> None:
    ratios = _step_with_zero_gradients(_module(head_weight_decay=0.5))
    head = [r for name, r in ratios.items() if name.startswith("similarity.")]
    rest = [r for name, r in ratios.items() if not name.startswith("similarity.")]
    assert head and rest
    for ratio in head:
        torch.testing.assert_close(ratio, torch.full_like(ratio, 1 - 0.1 * 0.5))
    for ratio in rest:
        torch.testing.assert_close(ratio, torch.ones_like(ratio))


def test_groups_partition_the_parameters_and_none_keeps_one_group() -> None:
    module = _module(head_weight_decay=0.2, weight_decay=0.01)
    groups = module.configure_optimizers().param_groups
    assert [g["weight_decay"] for g in groups] == [0.01, 0.2]
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in module.parameters())
    assert len(_module(head_weight_decay=None).configure_optimizers().param_groups) == 1


@pytest.mark.parametrize("bad", [-0.1, True, "0.1"])
def test_a_bad_value_is_named(bad: object) -> None:
    with pytest.raises(ValueError, match="head_weight_decay"):
        _module(head_weight_decay=bad)  # type: ignore[arg-type]


def test_the_config_key_reaches_the_module() -> None:
    cfg = compose_config("train", ["model/similarity=mol", "model.head_weight_decay=0.3"])
    assert cfg.model.head_weight_decay == 0.3
    assert compose_config("train", []).model.head_weight_decay is None
