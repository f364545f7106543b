"""Compare top-k results computed in different orders: scores within tolerance, ids equal up to ties.

Two correct top-k searches that sum in different orders (other chunk sizes, shards, kernels, CPUs) can
round the same score differently in the last bit, which reorders items whose scores tie or nearly tie.
Comparing their ids bit for bit therefore passes or fails by machine. :func:`assert_same_topk` accepts
an id mismatch only inside a group of tied reference scores; everything else must agree exactly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _row_scale(ref_row: Tensor) -> float:
    finite = ref_row[torch.isfinite(ref_row)]
    return max(float(finite.abs().max()), 1.0) if finite.numel() else 1.0


def bf16_score_tolerance(ref_row: Tensor, fraction: float = 0.08) -> float:
    """Largest absolute score error allowed to a bf16 MoL kernel: ``fraction`` of the row's largest |logit|.

    A bf16 kernel rounds the gating MLP's inputs and hidden units to 8-bit significands (and, with fast math,
    takes SiLU from tanh.approx.bf16x2), so gate logits are off by about 1e-2 and the mixture moves by a few
    percent of the component logits' scale for the odd item; a fixed absolute bound is too tight for large
    logits and too loose for small ones. Measured with the sharpened random gating of
    tests/test_retrieval_fused: on an H200 0.277 on a row whose largest |logit| is 8.7 (3.2 %) and 0.524 of
    9.5 (5.5 %, B = 256, one item of 25,600); under the Triton interpreter up to 0.52 of 14.3 (3.6 %) while
    the mean error stays 0.05-0.25 %. :func:`assert_bf16_scores_close` bounds the mean as well.
    """
    return fraction * _row_scale(ref_row)


def assert_bf16_scores_close(
    got: Tensor, want: Tensor, ref_row: Tensor, max_fraction: float = 0.08, mean_fraction: float = 0.01
) -> None:
    """bf16 kernel scores vs float64 reference scores of the same items, relative to the row's |logit| scale.

    The largest error may reach a few percent of the scale (rare items whose gate sits on a rounding edge);
    the mean error must stay under ``mean_fraction`` of it (measured 0.05-0.25 %), which a wrong gate, a wrong
    component or a shifted item would break.
    """
    scale = _row_scale(ref_row)
    err = (got.double() - want.double()).abs()
    if err.numel() == 0:
        return
    worst, mean = float(err.max()), float(err.mean())
    assert worst <= max_fraction * scale, (
        f"bf16 score error {worst:.4f} at {int(err.argmax())} > {max_fraction:.0%} of the row scale {scale:.3f}"
    )
    assert mean <= mean_fraction * scale, (
        f"bf16 mean score error {mean:.4f} > {mean_fraction:.0%} of the row scale {scale:.3f}"
    )


def _tied(a: float, b: float, rtol: float, atol: float) -> bool:
    if a == b:
        return True
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= atol + rtol * max(abs(a), abs(b))


def tie_groups(scores: list[float], rtol: float, atol: float) -> list[tuple[int, int]]:
    """[start, end) runs of consecutive sorted scores that are within tolerance of their neighbour."""
    groups, start = [], 0
    for j in range(1, len(scores) + 1):
        if j == len(scores) or not _tied(scores[j - 1], scores[j], rtol, atol):
            groups.append((start, j))
            start = j
    return groups


def assert_same_topk(
    scores: Tensor,
    ids: Tensor,
    ref_scores: Tensor,
    ref_ids: Tensor,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    msg: str = "",
) -> None:
    """Assert that two (B, K) top-k results agree up to floating-point ties.

    Scores must match position by position within tolerance (both are sorted, so swapping two tied items
    keeps them close). Ids must match, except within a tie group of the reference scores, where both
    results must hold the same ids in any order; the last group may be cut by K, so there the ids only
    need to be distinct from the rest of the row (an item tied with the K-th one may take its place).

    Args:
        scores: (B, K) scores of the result under test, sorted descending; -inf at empty slots.
        ids: (B, K) its ids.
        ref_scores: (B, K) reference scores.
        ref_ids: (B, K) reference ids.
        rtol: relative tolerance on scores (and of what counts as a tie).
        atol: absolute tolerance on scores (and of what counts as a tie).
        msg: prefix of the failure message.
    """
    assert scores.shape == ids.shape == ref_scores.shape == ref_ids.shape, (
        f"{msg} shapes {tuple(scores.shape)} {tuple(ids.shape)} vs {tuple(ref_scores.shape)}"
    )
    torch.testing.assert_close(
        scores.cpu().double(), ref_scores.cpu().double(), rtol=rtol, atol=atol, msg=msg
    )
    for row, (got, want, values) in enumerate(
        zip(ids.cpu().tolist(), ref_ids.cpu().tolist(), ref_scores.cpu().double().tolist())
    ):
        for start, end in tie_groups(values, rtol, atol):
            found, expected = got[start:end], want[start:end]
            if found == expected:
                continue
            cut = end == len(values)
            if cut:
                rest = got[:start]
                ok = len(set(found)) == len(found) and not set(found) & set(rest)
            else:
                ok = sorted(found) == sorted(expected)
            assert ok, (
                f"{msg} row {row}, positions {start}..{end - 1}: ids {found} vs reference {expected} "
                f"(scores {values[start:end]}) differ beyond a tie"
            )
