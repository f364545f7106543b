"""The Bayes ceiling of the synthetic data: rank each user's test item by its exact generative probability.

:meth:`SyntheticSequences.simulate <rails.datamodules.synthetic.SyntheticSequences.simulate>` returns, next to
the data, every user's hidden state just before the last (test) item is drawn: interests and their weights,
the current interest, the chain positions and the items already consumed. :func:`next_item_distribution`
turns such a state into the exact P(next item | state) of one generator step, and :func:`synthetic_oracle`
ranks every test item under it: the HR@K / NDCG@K / MRR no model can beat on average, plus how multi-modal the
next-item distribution really is at prediction time (used by docs/mol_investigation.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rails.datamodules.synthetic import Simulation, SyntheticSequences, UserState


def _cluster_mass(source: SyntheticSequences, state: UserState, size: int) -> dict[int, float]:
    """P(the next item comes from cluster c): stay or switch, then hand-over from an exhausted cluster."""
    interests, weights, current = state.interests, state.weights, state.current
    mass = {current: 1.0 if len(interests) == 1 else 1.0 - source.switch_prob}
    if len(interests) > 1:
        others = [c for c in interests if c != current]
        other_w = np.array([weights[interests.index(c)] for c in others])
        for c, w in zip(others, other_w / other_w.sum(), strict=True):
            mass[c] = mass.get(c, 0.0) + source.switch_prob * float(w)
    resolved: dict[int, float] = {}
    for c, m in mass.items():
        if state.consumed[c] == size:
            open_ = [x for x in interests if state.consumed[x] < size]
            for x in open_:
                resolved[x] = resolved.get(x, 0.0) + m / len(open_)
        else:
            resolved[c] = resolved.get(c, 0.0) + m
    return resolved


def next_item_distribution(
    source: SyntheticSequences, simulation: Simulation, state: UserState
) -> dict[int, float]:
    """Exact P(next item | hidden state) of one step of :meth:`SyntheticSequences.simulate`.

    Returns:
        item id -> probability (the items with positive probability; they sum to 1).
    """
    clusters, item_probs = simulation.clusters, simulation.item_probs
    size = clusters.shape[1]
    dist: dict[int, float] = {}
    for c, mass in _cluster_mass(source, state, size).items():
        last = state.last_pos[c]
        start_probs = item_probs * (1.0 - source.follow_prob if last >= 0 else 1.0)
        if last >= 0:
            start_probs = start_probs.copy()
            start_probs[(last + 1) % size] += source.follow_prob
        for pos in np.flatnonzero(start_probs):
            p = pos
            while int(clusters[c, p]) in state.seen:  # consumed items are skipped along the chain
                p = (p + 1) % size
            item = int(clusters[c, p])
            dist[item] = dist.get(item, 0.0) + mass * float(start_probs[pos])
    return dist


def synthetic_oracle(
    source: SyntheticSequences, ks: tuple[int, ...] = (10, 50)
) -> tuple[dict[str, float], np.ndarray, np.ndarray, np.ndarray]:
    """Bayes-optimal test metrics of the synthetic data (test item = last item) and multi-modality statistics.

    Ties in the oracle ranking are broken pessimistically, as in the evaluator.

    Returns:
        (metrics, probs (U, num_items + 1) exact next-item probabilities at the test step,
        targets (U,) test items, seen (U, num_items + 1) bool, items consumed before the test step).
        ``metrics`` holds ``hr@K``, ``ndcg@K`` (K in ``ks``), ``mrr``, ``p_target`` (mean probability of the
        test item), ``modes_over_5pct`` (clusters holding > 5% of the next-item mass) and
        ``mass_outside_top_cluster``, all averaged over users.
    """
    sequences, _, simulation = source.simulate()
    cluster_of = {int(x): c for c in range(source.num_clusters) for x in simulation.clusters[c]}
    sums = {f"hr@{k}": 0.0 for k in ks} | {f"ndcg@{k}": 0.0 for k in ks}
    sums |= {"mrr": 0.0, "p_target": 0.0, "modes_over_5pct": 0.0, "mass_outside_top_cluster": 0.0}
    probs = np.zeros((len(sequences), source.num_items + 1))
    targets = np.zeros(len(sequences), dtype=np.int64)
    seen = np.zeros_like(probs, dtype=bool)
    for user, (stored, state) in enumerate(zip(sequences["item_ids"], simulation.states, strict=True)):
        dist = next_item_distribution(source, simulation, state)
        target = int(stored[-1])
        p_target = dist.get(target, 0.0)
        # pessimistic ties: every item at least as likely as the target (the target included) ranks ahead
        rank = sum(1 for p in dist.values() if p >= p_target) if p_target > 0 else float("inf")
        for k in ks:
            if rank <= k:
                sums[f"hr@{k}"] += 1.0
                sums[f"ndcg@{k}"] += 1.0 / float(np.log2(rank + 1))
        sums["mrr"] += 1.0 / rank
        sums["p_target"] += p_target
        by_cluster: dict[int, float] = {}
        for item, p in dist.items():
            by_cluster[cluster_of[item]] = by_cluster.get(cluster_of[item], 0.0) + p
        sums["modes_over_5pct"] += sum(1 for p in by_cluster.values() if p > 0.05)
        sums["mass_outside_top_cluster"] += 1.0 - max(by_cluster.values())
        probs[user, list(dist)] = list(dist.values())
        targets[user] = target
        seen[user, list(state.seen)] = True
    return {key: value / len(sequences) for key, value in sums.items()}, probs, targets, seen


def synthetic_source(
    overrides: Sequence[str] = (), base: Mapping[str, Any] | None = None
) -> SyntheticSequences:
    """A :class:`SyntheticSequences` from ``base`` settings (the class defaults when None) and
    ``data.source.<name>=<value>`` overrides (values converted to the setting's type).

    Raises:
        ValueError: naming the override that is not ``data.source.*`` or names an unknown setting.
    """
    settings = {f.name: f.default for f in dataclasses.fields(SyntheticSequences)}
    settings |= dict(base or {})
    for item in overrides:
        key, _, value = item.partition("=")
        if not key.startswith("data.source."):
            raise ValueError(f"{item!r}: only data.source.* overrides set the synthetic data")
        name = key.removeprefix("data.source.")
        if name not in settings:
            raise ValueError(f"unknown synthetic setting {key!r}; known: {sorted(settings)}")
        settings[name] = type(settings[name])(float(value))
    return SyntheticSequences(**settings)
