"""The synthetic-data oracle of ``scripts/compare_heads.py --oracle`` (used by docs/mol_investigation.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rails.datamodules.synthetic import SyntheticSequences

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compare_heads():
    spec = importlib.util.spec_from_file_location("compare_heads", REPO_ROOT / "scripts" / "compare_heads.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_heads"] = module
    spec.loader.exec_module(module)
    return module


TINY = {"num_users": 40, "num_items": 60, "num_clusters": 5, "min_length": 5, "max_length": 20}


def test_oracle_replays_the_generator_and_gives_distributions(compare_heads) -> None:
    source = SyntheticSequences(**TINY)
    metrics, probs, targets, seen = compare_heads.synthetic_oracle(source)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert (probs[seen] == 0).all()  # consumed items are never generated again
    assert (probs[np.arange(len(targets)), targets] > 0).all()  # every test item had positive probability
    for key in ("hr@10", "ndcg@10", "mrr"):
        assert 0.0 < metrics[key] <= 1.0
    assert metrics["hr@50"] >= metrics["hr@10"]
    assert 1.0 <= metrics["modes_over_5pct"] <= TINY["num_clusters"]


def test_oracle_hit_rate_matches_a_direct_ranking(compare_heads) -> None:
    metrics, probs, targets, _ = compare_heads.synthetic_oracle(SyntheticSequences(**TINY))
    target_p = probs[np.arange(len(targets)), targets]
    ranks = (probs >= target_p[:, None]).sum(axis=1)
    assert metrics["hr@10"] == pytest.approx(float((ranks <= 10).mean()))


def test_single_interest_without_popularity_noise_is_fully_predictable(compare_heads) -> None:
    # one interest, always the chain successor: after the first item the next item is certain
    settings = {"interests_min": 1, "interests_max": 1, "follow_prob": 1.0, "max_length": 12}
    source = SyntheticSequences(**TINY | settings)
    metrics, *_ = compare_heads.synthetic_oracle(source)
    assert metrics["hr@10"] == 1.0 and metrics["mrr"] == 1.0 and metrics["mass_outside_top_cluster"] == 0.0


def test_oracle_rejects_unknown_settings(compare_heads) -> None:
    with pytest.raises(ValueError, match="data.source.nope"):
        compare_heads.oracle_main(["data.source.nope=1"], [], 1)


@pytest.mark.parametrize("head", ["dot", "mol"])
def test_head_capacity_fit_learns(compare_heads, head: str) -> None:
    torch.manual_seed(0)
    _, probs, targets, seen = compare_heads.synthetic_oracle(SyntheticSequences(**TINY))
    chance = 10 / (TINY["num_items"] - 10)  # about HR@10 of a random ranking
    assert compare_heads.head_capacity(probs, targets, seen, head, dim=8, steps=40) > 2 * chance
