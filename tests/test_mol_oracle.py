"""The synthetic-data oracle (rails.datamodules.synthetic_oracle) and the head-capacity fit (rails.models.head_capacity),
used by docs/mol_investigation.md through scripts/synthetic_oracle.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rails.datamodules.synthetic import SyntheticSequences
from rails.datamodules.synthetic_oracle import next_item_distribution, synthetic_oracle, synthetic_source
from rails.models.head_capacity import head_capacity

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = {"num_users": 40, "num_items": 60, "num_clusters": 5, "min_length": 5, "max_length": 20}


def test_simulate_records_the_state_of_every_last_step() -> None:
    source = SyntheticSequences(**TINY)
    sequences, items, simulation = source.simulate()
    generated, generated_items = source.generate()
    assert sequences["item_ids"].map(list).tolist() == generated["item_ids"].map(list).tolist()
    assert items.equals(generated_items)
    assert len(simulation.states) == TINY["num_users"]
    for stored, state in zip(sequences["item_ids"], simulation.states, strict=True):
        assert state.seen == {int(x) for x in stored[:-1]}  # everything but the test item
        assert int(stored[-1]) in next_item_distribution(source, simulation, state)


def test_oracle_gives_exact_distributions() -> None:
    source = SyntheticSequences(**TINY)
    metrics, probs, targets, seen = synthetic_oracle(source)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert (probs[seen] == 0).all()  # consumed items are never generated again
    assert (probs[np.arange(len(targets)), targets] > 0).all()  # every test item had positive probability
    for key in ("hr@10", "ndcg@10", "mrr"):
        assert 0.0 < metrics[key] <= 1.0
    assert metrics["hr@50"] >= metrics["hr@10"]
    assert 1.0 <= metrics["modes_over_5pct"] <= TINY["num_clusters"]


def test_oracle_hit_rate_matches_a_direct_ranking() -> None:
    metrics, probs, targets, _ = synthetic_oracle(SyntheticSequences(**TINY))
    target_p = probs[np.arange(len(targets)), targets]
    ranks = (probs >= target_p[:, None]).sum(axis=1)
    assert metrics["hr@10"] == pytest.approx(float((ranks <= 10).mean()))


def test_single_interest_without_popularity_noise_is_fully_predictable() -> None:
    # one interest, always the chain successor: after the first item the next item is certain
    settings = {"interests_min": 1, "interests_max": 1, "follow_prob": 1.0, "max_length": 12}
    metrics, *_ = synthetic_oracle(SyntheticSequences(**TINY | settings))
    assert metrics["hr@10"] == 1.0 and metrics["mrr"] == 1.0 and metrics["mass_outside_top_cluster"] == 0.0


def test_source_settings_from_overrides() -> None:
    source = synthetic_source(["data.source.switch_prob=0.5", "data.source.num_users=7"], {"num_users": 3})
    assert source.switch_prob == 0.5 and source.num_users == 7 and isinstance(source.num_users, int)
    assert synthetic_source().num_users == SyntheticSequences().num_users
    with pytest.raises(ValueError, match="data.source.nope"):
        synthetic_source(["data.source.nope=1"])
    with pytest.raises(ValueError, match="'model.item_dim=3': only data.source"):
        synthetic_source(["model.item_dim=3"])


@pytest.mark.parametrize("head", ["dot", "mol"])
def test_head_capacity_fit_learns(head: str) -> None:
    _, probs, targets, seen = synthetic_oracle(SyntheticSequences(**TINY))
    chance = 10 / (TINY["num_items"] - 10)  # about HR@10 of a random ranking
    assert head_capacity(probs, targets, seen, head, dim=8, steps=40) > 2 * chance


def test_script_prints_oracle_and_capacity() -> None:
    overrides = [f"data.source.{k}={v}" for k, v in TINY.items()]
    command = [sys.executable, "scripts/synthetic_oracle.py", *overrides, "--capacity-dims", "4"]
    result = subprocess.run(
        [*command, "--capacity-steps", "2"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        '"oracle": {"hr@10"' in result.stdout and '"dot_D4"' in result.stdout and '"mol_D4"' in result.stdout
    )
    bad = subprocess.run([*command[:2], "data.source.nope=1"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown synthetic setting 'data.source.nope'" in bad.stderr
