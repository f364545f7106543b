"""model.dot_loss_weight: an auxiliary dot-product loss beside a learned head (rails.models.losses.dot_auxiliary)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rails.config import check_config
from rails.models.losses.dot_auxiliary import DotAuxiliaryLoss
from tests.conftest import compose_config, tiny_model


def _reference_loss(queries, items, rows, collisions, temperature):
    """float64: -log softmax(cos / tau)[positive], colliding negatives dropped from the softmax."""
    q = torch.nn.functional.normalize(queries.double(), dim=-1)
    x = torch.nn.functional.normalize(items.double(), dim=-1)
    losses = []
    for m in range(rows.shape[0]):
        logits = (x[rows[m]] @ q[m]) / temperature  # (1 + R,)
        keep = torch.cat([torch.tensor([True]), ~collisions[m]])
        losses.append(-torch.log_softmax(logits[keep], dim=0)[0])
    return torch.stack(losses).mean()


def test_sampled_matches_a_float64_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    queries, items = torch.randn(6, 8, generator=generator), torch.randn(20, 8, generator=generator)
    rows = torch.randint(0, 20, (6, 5), generator=generator)
    rows[1, 2] = rows[1, 0]  # a negative equal to the positive
    collisions = rows[:, 1:] == rows[:, :1]
    assert collisions.any()
    got = DotAuxiliaryLoss(temperature=0.1).sampled(queries, items, rows, collisions)
    expected = _reference_loss(queries, items, rows, collisions, 0.1)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


def test_shared_equals_sampled_on_the_same_items() -> None:
    generator = torch.Generator().manual_seed(1)
    queries, positives = torch.randn(4, 8, generator=generator), torch.randn(4, 8, generator=generator)
    negatives = torch.randn(7, 8, generator=generator)
    negatives[2] = positives[3]
    collisions = torch.zeros(4, 7, dtype=torch.bool)
    collisions[3, 2] = True
    table = torch.cat([negatives, positives])  # rows: the negatives, then one per query
    rows = torch.cat([torch.arange(7, 11)[:, None], torch.arange(7).expand(4, 7)], dim=1)
    loss = DotAuxiliaryLoss(temperature=0.05)
    torch.testing.assert_close(
        loss.shared(queries, positives, negatives, collisions),
        loss.sampled(queries, table, rows, collisions),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("bad", [0.0, -0.1, True, "a"])
def test_bad_temperature_names_the_key(bad) -> None:
    with pytest.raises(ValueError, match="temperature"):
        DotAuxiliaryLoss(temperature=bad)


def _loss_parts(tmp_path: Path, overrides: list[str]):
    model, loader = tiny_model(tmp_path, ["model/similarity=mol", *overrides])
    batch = next(iter(loader))
    torch.manual_seed(0)
    total, parts = model.train().training_loss(batch)
    return model, total, parts


@pytest.mark.parametrize("negatives", ["uniform", "shared"])
def test_the_module_adds_the_weighted_dot_loss(tmp_path: Path, negatives: str) -> None:
    model, total, parts = _loss_parts(
        tmp_path,
        [f"model/negatives={negatives}", "model.dot_loss_weight=0.5", "model.dot_loss_temperature=0.1"],
    )
    assert model.dot_loss is not None and model.dot_loss.loss.temperature == 0.1
    weights = {"sampled_softmax": 1.0, "dot_loss": 0.5, **model.aux_loss_weights}
    expected = sum(weights[name] * value for name, value in parts.items())
    torch.testing.assert_close(total, expected)
    assert parts["dot_loss"] > 0
    total.backward()
    assert model.items.table.weight.grad.abs().sum() > 0


def test_the_dot_loss_alone_trains_encoder_and_items(tmp_path: Path) -> None:
    """Its gradient reaches the encoder and the item table, never the head."""
    model, _, parts = _loss_parts(tmp_path, ["model.dot_loss_weight=1.0"])
    parts["dot_loss"].backward()
    grads = {
        name: p.grad for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0
    }
    assert any(name.startswith("items.") for name in grads)
    assert any(name.startswith("encoder.") for name in grads)
    assert not any(name.startswith("similarity.") for name in grads)


def test_weight_zero_computes_nothing(tmp_path: Path) -> None:
    model, _, parts = _loss_parts(tmp_path, [])
    assert model.dot_loss is None and "dot_loss" not in parts


@pytest.mark.parametrize(("key", "bad"), [("dot_loss_weight", -1.0), ("dot_loss_temperature", 0.0)])
def test_the_config_check_names_a_bad_key(key: str, bad: float) -> None:
    cfg = compose_config("train", ["model/similarity=mol", f"model.{key}={bad}"])
    with pytest.raises(ValueError, match=f"model.{key}={bad}"):
        check_config(cfg)


@pytest.mark.parametrize("negatives", ["uniform", "shared"])
def test_beside_the_dot_head_it_is_the_heads_own_loss(tmp_path: Path, negatives: str) -> None:
    """With the dot head (cosine / 0.05) the auxiliary loss is the main loss again: same rows, same masks."""
    model, loader = tiny_model(tmp_path, [f"model/negatives={negatives}", "model.dot_loss_weight=0.5"])
    torch.manual_seed(0)
    total, parts = model.train().training_loss(next(iter(loader)))
    torch.testing.assert_close(parts["dot_loss"], parts["sampled_softmax"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(total, 1.5 * parts["sampled_softmax"], rtol=1e-5, atol=1e-6)


def test_queries_and_items_of_two_widths_are_refused() -> None:
    rows = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="one width: got 8 and 6"):
        DotAuxiliaryLoss().sampled(
            torch.randn(2, 8), torch.randn(5, 6), rows, torch.zeros(2, 2, dtype=torch.bool)
        )
