"""Embedded default dataset: seeded synthetic multi-interest interaction sequences (no download).

Generative story (all draws from one ``numpy.random.Generator(seed)``):

1. Items ``1..num_items`` are shuffled and cut into ``num_clusters`` equal clusters (genres). Inside a
   cluster the shuffled order defines a cyclic *chain*: every item has one successor (a "sequel").
   Item popularity inside a cluster is Zipf-like (exponent ``zipf_exponent``); clusters themselves have
   Zipf-like popularity too.
2. Each user draws ``interests_min..interests_max`` distinct clusters (by cluster popularity) and
   Dirichlet(``interest_concentration``) weights over them, and a sequence length uniform in
   ``min_length..max_length``.
3. The sequence starts in an interest drawn by weight (an exhausted interest hands over to another). At each step the user switches to another of
   their interests with probability ``switch_prob`` (a new session: the time gap is long), otherwise
   stays (short gap). Inside the current interest the next item is the chain successor of the last
   item the user consumed in that cluster with probability ``follow_prob``, else a popularity draw
   from the cluster. Already-consumed items are skipped by walking the chain forward, so no item
   repeats within a user (as in MovieLens).
4. Timestamps start uniformly in 2000-2010 and advance by exponential gaps (mean ``gap_seconds``
   within a session, ``session_gap_seconds`` across sessions). Ratings are 4-5 for chain follows and
   1-5 otherwise.

Why this structure: the next item is predictable from the sequence (chains, current session), so a
sequential model beats the popularity baseline by a wide margin; and each user mixes several distinct
interests, so a single query vector must cover a multi-modal next-item distribution, which leaves room
for Mixture-of-Logits to beat a single dot product.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rails.datamodules.canonical import is_canonical, settings_key, write_canonical


@dataclass
class UserState:
    """What the generator knows about one user just before it draws the user's last (test) item.

    Attributes:
        interests: the user's clusters, in draw order.
        weights: (len(interests),) float64 Dirichlet weights over them.
        current: the cluster of the previous step.
        seen: items consumed so far (never drawn again).
        last_pos: cluster -> chain position of the last item consumed there (-1: none yet).
        consumed: cluster -> items consumed there.
    """

    interests: list[int]
    weights: np.ndarray
    current: int
    seen: set[int]
    last_pos: dict[int, int]
    consumed: dict[int, int]


@dataclass
class Simulation:
    """The hidden structure behind a generated dataset (what :mod:`rails.datamodules.synthetic_oracle` reads).

    Attributes:
        clusters: (num_clusters, num_items // num_clusters) int64; row c is cluster c's chain of item ids.
        item_probs: (num_items // num_clusters,) float64 popularity of each chain position inside a cluster.
        states: one :class:`UserState` per user, in user order.
    """

    clusters: np.ndarray
    item_probs: np.ndarray
    states: list[UserState]


@dataclass
class SyntheticSequences:
    """Seeded generator of multi-interest sequences; ``prepare`` caches the canonical files.

    Args:
        num_users: users (= evaluation queries).
        num_items: items, ids ``1..num_items``; all of them form the candidate corpus.
        num_clusters: interest clusters; must divide ``num_items``.
        interests_min: fewest interests per user.
        interests_max: most interests per user.
        min_length: shortest sequence (>= 3 so that train, val and test targets exist).
        max_length: longest sequence.
        switch_prob: probability of switching interest (a new session) at each step.
        follow_prob: probability of taking the chain successor inside the current interest.
        zipf_exponent: popularity skew inside clusters and across clusters.
        interest_concentration: Dirichlet concentration of a user's interest weights.
        gap_seconds: mean time gap inside a session.
        session_gap_seconds: mean time gap between sessions.
        seed: random seed; the same settings always give the same data.
    """

    num_users: int = 2000
    num_items: int = 1000
    num_clusters: int = 20
    interests_min: int = 2
    interests_max: int = 4
    min_length: int = 20
    max_length: int = 80
    switch_prob: float = 0.3
    follow_prob: float = 0.6
    zipf_exponent: float = 1.0
    interest_concentration: float = 1.0
    gap_seconds: float = 3600.0
    session_gap_seconds: float = 7 * 86400.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_items % self.num_clusters != 0:
            raise ValueError(
                f"num_items={self.num_items} must be a multiple of num_clusters={self.num_clusters}"
            )
        if not 1 <= self.interests_min <= self.interests_max <= self.num_clusters:
            raise ValueError(
                f"need 1 <= interests_min ({self.interests_min}) <= interests_max ({self.interests_max}) "
                f"<= num_clusters ({self.num_clusters})"
            )
        if not 3 <= self.min_length <= self.max_length:
            raise ValueError(f"need 3 <= min_length ({self.min_length}) <= max_length ({self.max_length})")
        if self.max_length > self.num_items // self.num_clusters * self.interests_min:
            raise ValueError("max_length exceeds the items a user with interests_min interests can consume")
        for name in ("switch_prob", "follow_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    @property
    def name(self) -> str:
        return "synthetic"

    def generate(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Return (sequences, items) frames in the canonical layout."""
        sequences, items, _ = self.simulate()
        return sequences, items

    def simulate(self) -> tuple[pd.DataFrame, pd.DataFrame, Simulation]:
        """:meth:`generate` plus the hidden structure (clusters, popularity) and every user's last-step state."""
        rng = np.random.default_rng(self.seed)
        size = self.num_items // self.num_clusters
        clusters = rng.permutation(np.arange(1, self.num_items + 1)).reshape(self.num_clusters, size)
        ranks = np.arange(1, size + 1, dtype=np.float64)
        item_probs = ranks**-self.zipf_exponent
        item_probs /= item_probs.sum()
        cluster_probs = np.arange(1, self.num_clusters + 1, dtype=np.float64) ** -self.zipf_exponent
        cluster_probs = rng.permutation(cluster_probs / cluster_probs.sum())

        rows, states = [], []
        for user in range(1, self.num_users + 1):
            k = int(rng.integers(self.interests_min, self.interests_max + 1))
            interests = rng.choice(self.num_clusters, size=k, replace=False, p=cluster_probs)
            weights = rng.dirichlet(np.full(k, self.interest_concentration))
            length = int(rng.integers(self.min_length, self.max_length + 1))
            seen: set[int] = set()
            last_pos = {int(c): -1 for c in interests}  # last consumed chain position per cluster
            consumed = {int(c): 0 for c in interests}
            items, stamps, ratings = [], [], []
            t = rng.uniform(946684800, 1262304000)
            current = int(rng.choice(interests, p=weights))
            for step in range(length):
                if step == length - 1:
                    interest_list = [int(c) for c in interests]
                    states.append(
                        UserState(
                            interest_list, weights, current, set(seen), last_pos.copy(), consumed.copy()
                        )
                    )
                if step > 0 and k > 1 and rng.random() < self.switch_prob:
                    others = [c for c in interests if c != current]
                    other_w = np.array([weights[list(interests).index(c)] for c in others])
                    current = int(rng.choice(others, p=other_w / other_w.sum()))
                    t += rng.exponential(self.session_gap_seconds)
                elif step > 0:
                    t += rng.exponential(self.gap_seconds)
                if consumed[current] == size:  # interest exhausted: move to one with unseen items
                    open_ = [int(c) for c in interests if consumed[int(c)] < size]
                    current = open_[int(rng.integers(len(open_)))]
                follow = last_pos[current] >= 0 and rng.random() < self.follow_prob
                pos = (last_pos[current] + 1) % size if follow else int(rng.choice(size, p=item_probs))
                while int(clusters[current, pos]) in seen:  # walk the chain to the next unseen item
                    pos = (pos + 1) % size
                    follow = False
                item = int(clusters[current, pos])
                seen.add(item)
                consumed[current] += 1
                last_pos[current] = pos
                items.append(item)
                stamps.append(int(t))
                ratings.append(float(rng.integers(4, 6) if follow else rng.integers(1, 6)))
            rows.append({"user_id": user, "item_ids": items, "timestamps": stamps, "ratings": ratings})
        sequences = pd.DataFrame(rows)
        item_cluster = np.empty(self.num_items + 1, dtype=np.int64)
        for c in range(self.num_clusters):
            item_cluster[clusters[c]] = c
        items_frame = pd.DataFrame({"item_id": np.arange(1, self.num_items + 1), "cluster": item_cluster[1:]})
        return sequences, items_frame, Simulation(clusters, item_probs, states)

    def prepare(self, root: str | os.PathLike[str]) -> Path:
        """Generate once into ``root/synthetic-<settings hash>`` and return that directory."""
        settings = asdict(self)
        directory = Path(root) / f"synthetic-{settings_key(settings)}"
        if not is_canonical(directory):
            sequences, items = self.generate()
            write_canonical(directory, sequences, items, name=self.name, settings=settings)
        return directory
