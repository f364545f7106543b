"""The MoL pair-usage diagnostic: gating weights as the head mixes them, their summary, the script end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from rails.models.similarity.mol import MoLSimilarity
from rails.models.similarity.mol_usage import pair_weights, residual_deviation, summarise_pair_usage
from tests.conftest import TINY_OVERRIDES, build_model_and_loader, compose_config, shrink

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("pairwise", [False, True])
def test_pair_weights_are_the_weights_the_head_mixes(pairwise: bool) -> None:
    torch.manual_seed(0)
    head = MoLSimilarity(
        query_dim=6, item_dim=6, num_query_components=3, num_item_components=2, component_dim=4,
        query_hidden_dim=8, gating_query_hidden_dim=5, gating_item_hidden_dim=5, gating_qi_hidden_dim=5,
    ).double().eval()  # fmt: skip
    queries, items = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 7, 6, dtype=torch.float64)
    query_state = head.encode_queries(queries)
    item_state = head.encode_items(items if pairwise else items[0])
    weights, logits = pair_weights(head, query_state, item_state)
    scores, expected = head._mix(
        query_state.components, query_state.gate, item_state.components, item_state.gate
    )
    assert weights.shape == logits.shape == (4, 7, 6)
    torch.testing.assert_close(weights.double(), expected)
    torch.testing.assert_close((weights.double() * logits).sum(-1), scores)


def test_pair_weights_of_a_float32_head_with_bf16_states() -> None:
    """States in bf16 (a bf16-mixed training's encoder and item cache) with a float32 head: the head's dtype."""
    torch.manual_seed(0)
    head = MoLSimilarity(
        query_dim=6, item_dim=6, num_query_components=3, num_item_components=2, component_dim=4,
        query_hidden_dim=8, gating_query_hidden_dim=5, gating_item_hidden_dim=5, gating_qi_hidden_dim=5,
    ).eval()  # fmt: skip
    query_state = head.encode_queries(torch.randn(4, 6))
    item_state = head.encode_items(torch.randn(7, 6))
    bf16_queries = type(query_state)(query_state.components.bfloat16(), query_state.gate.bfloat16())
    bf16_items = type(item_state)(item_state.components.bfloat16(), item_state.gate.bfloat16())
    weights, logits = pair_weights(head, bf16_queries, bf16_items)
    expected, _ = pair_weights(head, query_state, item_state)
    assert weights.dtype == logits.dtype == torch.float32
    torch.testing.assert_close(weights, expected, atol=0.02, rtol=0.05)


def test_summary_of_known_weights() -> None:
    weights = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.2, 0.8], [1 / 3, 1 / 3, 1 / 3]])
    usage = summarise_pair_usage(weights)
    assert usage.num_pairs == 3
    assert usage.mean_weight == pytest.approx(
        [(1 + 0.5 + 1 / 3) / 4, (0.5 + 0.2 + 1 / 3) / 4, (0.8 + 1 / 3) / 4]
    )
    assert usage.top_pair_rate == pytest.approx([0.75, 0.0, 0.25])  # ties go to the lower pair
    entropy_02_08 = -(0.2 * torch.log(torch.tensor(0.2)) + 0.8 * torch.log(torch.tensor(0.8)))
    assert usage.effective_pairs == pytest.approx((1 + 2 + float(entropy_02_08.exp()) + 3) / 4, rel=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        summarise_pair_usage(torch.zeros(0, 3))


def test_residual_deviation_is_zero_at_initialisation_and_measures_the_learned_maps() -> None:
    torch.manual_seed(0)
    head = MoLSimilarity(
        query_dim=8, item_dim=8, num_query_components=3, num_item_components=2, component_dim=8,
        query_hidden_dim=16, residual_components=True,
    ).double()  # fmt: skip
    queries, items = torch.randn(5, 8, dtype=torch.float64), torch.randn(7, 8, dtype=torch.float64)
    start = residual_deviation(head, queries, items)
    assert start is not None and set(start) == {"query", "item"}
    for side in start.values():
        assert side["relative_norm"] == pytest.approx(0.0, abs=1e-12) and side["cosine"] == pytest.approx(1.0)
    with torch.no_grad():
        head.item_components.proj.weight.copy_(torch.eye(8).repeat(2, 1))  # delta_j(x) = x: c_j = 2x
        head.item_components.proj.bias.zero_()
        head.query_components.output_layer.weight.normal_()
    moved = residual_deviation(head, queries, items)
    assert moved["item"]["relative_norm"] == pytest.approx(1.0) and moved["item"]["cosine"] == pytest.approx(
        1.0
    )
    assert moved["query"]["relative_norm"] > 0 and moved["query"]["cosine"] < 1
    plain = MoLSimilarity(query_dim=8, item_dim=8, component_dim=8, query_hidden_dim=16)
    assert residual_deviation(plain, queries.float(), items.float()) is None


@pytest.mark.parametrize("kind", ["identity", "residual"])
def test_script_reports_an_identity_or_residual_checkpoint(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(0)
    overrides = [*TINY_OVERRIDES, "model/similarity=mol", f"model.similarity.{kind}_components=true"]
    cfg = shrink(compose_config("train", overrides), tmp_path)
    cfg.model.similarity.component_dim = cfg.model.item_dim
    GlobalHydra.instance().clear()
    model, _ = build_model_and_loader(cfg)
    stored = OmegaConf.to_container(cfg, resolve=True)
    stored.pop("hydra")
    checkpoint = {
        "rails_config": stored,
        "state_dict": model.state_dict(),
        "hyper_parameters": {"num_items": model.items.num_items},
    }
    path = tmp_path / "best.ckpt"
    torch.save(checkpoint, path)
    out = tmp_path / "usage"
    command = [sys.executable, str(REPO_ROOT / "scripts" / "mol_pair_usage.py"), "--checkpoint", str(path)]
    command += [
        "--data-root",
        cfg.data.root,
        "--queries",
        "16",
        "--k",
        "5",
        "--random-items",
        "32",
        "--out",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = json.loads((out / "mol_pair_usage.json").read_text())
    assert record["identity_components"] is (kind == "identity") and record["queries"] == 16
    if kind == "residual":  # an untrained head: its components are still the embeddings
        assert set(record["residual_deviation"]) == {"query", "item"}
        assert record["residual_deviation"]["item"]["cosine"] == pytest.approx(1.0)
        assert "Residual components" in (out / "mol_pair_usage.md").read_text()
    else:
        assert record["residual_deviation"] is None
    for items in ("top_k", "random"):
        usage = record[items]
        assert (
            usage["num_pairs"]
            == cfg.model.similarity.num_query_components * cfg.model.similarity.num_item_components
        )
        assert sum(usage["mean_weight"]) == pytest.approx(1.0) and sum(
            usage["top_pair_rate"]
        ) == pytest.approx(1.0)
        assert 1.0 <= usage["effective_pairs"] <= usage["num_pairs"]
    assert "| `best.ckpt` |" in (out / "mol_pair_usage.md").read_text()
    labelled = subprocess.run([*command, "--label", "a", "b"], capture_output=True, text=True, timeout=300)
    assert labelled.returncode == 2 and "--label names 2 checkpoints" in labelled.stderr
    bad = subprocess.run(
        [*command[:3], str(tmp_path / "missing.ckpt"), *command[4:]], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "missing.ckpt" in bad.stderr
