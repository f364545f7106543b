"""The tie-tolerant top-k comparison used by the retrieval tests accepts ties only; the bf16 score check."""

from __future__ import annotations

import math

import pytest
import torch

from tests.topk_compare import assert_bf16_scores_close, assert_same_topk, bf16_score_tolerance, tie_groups

SCORES = torch.tensor([[5.0, 4.0, 4.0 + 1e-7, 3.0, 2.0, 2.0]])
IDS = torch.tensor([[10, 20, 30, 40, 50, 60]])


def test_tie_groups_chain_neighbours_within_tolerance() -> None:
    assert tie_groups([5.0, 4.0, 4.0 + 1e-7, 3.0], 1e-5, 1e-5) == [(0, 1), (1, 3), (3, 4)]
    inf = float("-inf")
    assert tie_groups([1.0, inf, inf], 1e-5, 1e-5) == [(0, 1), (1, 3)]


def test_swaps_inside_a_tie_and_at_the_cut_pass() -> None:
    assert_same_topk(SCORES, IDS, SCORES, IDS)
    swapped = torch.tensor([[10, 30, 20, 40, 50, 60]])  # 20 and 30 tie
    assert_same_topk(SCORES, swapped, SCORES, IDS)
    other_at_cut = torch.tensor([[10, 20, 30, 40, 60, 70]])  # 70 tied with the K-th item took a place
    assert_same_topk(SCORES, other_at_cut, SCORES, IDS)


@pytest.mark.parametrize(
    "ids",
    [
        [[20, 10, 30, 40, 50, 60]],  # 10 (score 5) and 20 (score 4) are not tied
        [[10, 20, 70, 40, 50, 60]],  # a foreign id inside a tie group that is not the last one
        [[10, 20, 30, 40, 50, 40]],  # a duplicate in the cut group
    ],
)
def test_real_differences_fail(ids) -> None:
    with pytest.raises(AssertionError, match="differ beyond a tie"):
        assert_same_topk(SCORES, torch.tensor(ids), SCORES, IDS)


def test_scores_beyond_tolerance_fail() -> None:
    with pytest.raises(AssertionError):
        assert_same_topk(SCORES + 1e-3, IDS, SCORES, IDS)


def test_bf16_score_check_bounds_the_largest_and_the_mean_error() -> None:
    ref_row = torch.cat([torch.linspace(10.0, -2.0, 100, dtype=torch.float64), torch.tensor([-math.inf])])
    want = ref_row[:100]
    rare = want.clone()
    rare[7] += 0.6  # one item of 100 off by 6 % of the scale: a gate on a rounding edge
    assert_bf16_scores_close(rare.float(), want, ref_row)
    far = want.clone()
    far[7] += 0.9
    with pytest.raises(AssertionError, match="at 7 > 8% of the row scale 10.000"):
        assert_bf16_scores_close(far.float(), want, ref_row)
    with pytest.raises(AssertionError, match="mean score error"):
        assert_bf16_scores_close((want + 0.2).float(), want, ref_row)  # every score 2 % off: a wrong gate
    assert bf16_score_tolerance(ref_row) == pytest.approx(0.8)
