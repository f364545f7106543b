"""Two-pass exact MoL top-k (``rails.kernels.mol_topk_two_pass``): thresholds from a strided sample, then
candidate emission in the fused kernel.

Host-side pieces run in plain PyTorch: the packed lower bound of a score is exactly one below the smallest
key with that score, -inf lets everything through, exclusions map onto the sample's positions, the stride
and capacity rules. Under the Triton interpreter (a subprocess, ``python -m tests.test_mol_topk_two_pass``)
the two-pass search equals the float64 reference up to ties: fp32 and bf16, with history exclusion (also
of the sample's own best items, which must not raise the threshold), k = 1 and k > the sample, and a
capacity too small for the candidates (the search falls back to the running top-k, and says so), and through
``fused_mol_search`` and ``ExactTopK(fused_sample_stride=, fused_prune=)`` with a MoL head's own states.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch

from tests.test_mol_topk_kernel import check_case, make_problem, reference_scores, run_kernel
from tests.topk_compare import assert_same_topk
from tests.triton_interpreter import run_interpreted


def test_packed_lower_bound_is_one_below_the_smallest_key_of_that_score():
    pytest.importorskip("triton")
    from rails.kernels.mol_topk_triton import EMPTY_KEY, decode_keys
    from rails.kernels.mol_topk_two_pass import packed_lower_bounds

    scores = torch.tensor([3.25, -7.5, 0.0, -0.0, 1e-30, -1e30, 17.0, -torch.inf, torch.nan])
    bounds = packed_lower_bounds(scores)
    assert bounds[-2:].tolist() == [EMPTY_KEY, EMPTY_KEY]  # -inf and NaN: every key passes
    got_scores, got_positions = decode_keys(bounds[:-2] + 1)
    assert torch.equal(got_scores, scores[:-2])  # the smallest key of that score: the largest position
    assert got_positions.tolist() == [2**32 - 1] * (len(scores) - 2)
    distinct = torch.tensor([0, 1, 2, 4, 5, 6])  # without -0.0, which ranks just below 0.0
    order = distinct[torch.argsort(scores[distinct])]  # keys keep the order of the scores
    assert torch.all(bounds[order][1:] > bounds[order][:-1])
    assert bounds[3] < bounds[2]


def test_sample_exclusions_and_stride_rules():
    pytest.importorskip("triton")
    from rails.kernels.mol_topk_two_pass import (
        candidate_capacity,
        default_sample_stride,
        sample_exclusions,
        two_pass_stride,
    )

    excl = torch.tensor([[0, 3, 8, -1], [16, 17, 4, 12]])
    assert sample_exclusions(excl, 4).tolist() == [[0, -1, 2, -1], [4, -1, 1, 3]]
    assert sample_exclusions(None, 4) is None
    assert default_sample_stride(100_000_000, 100) == 64
    assert default_sample_stride(10_000_001, 100) == 64
    assert default_sample_stride(10_000_000, 100) == 0  # one pass up to 10M items (faster at 1M, 10M)
    assert default_sample_stride(1_000_000, 100) == 0
    assert default_sample_stride(5_000, 100) == 0
    assert (
        two_pass_stride(1_000_000, 100) == 64 and two_pass_stride(100_000, 100) == 62
    )  # a sample >= 16 k items
    assert two_pass_stride(5_000, 100) == 0  # too small to pay
    assert candidate_capacity(100, 64, 1_000_000) == 2 * 100 * 64 + 1024
    assert candidate_capacity(100, 64, 5_000) == 5_000


def run_two_pass(pb, k, dtype, exclude, **kw):
    """``two_pass_mol_topk`` on CPU under the interpreter (the problem's states rounded to ``dtype``)."""
    from rails.kernels.mol_topk_two_pass import two_pass_mol_topk

    return two_pass_mol_topk(
        pb.query_components,
        pb.query_gate,
        pb.item_components.to(dtype),
        pb.item_gate.to(dtype),
        qi_hidden_weight=pb.w1,
        qi_hidden_bias=pb.b1,
        qi_out_weight=pb.w2,
        qi_out_bias=pb.b2,
        temperature=pb.temperature,
        k=k,
        exclude_positions=exclude,
        **kw,
    )


def check_excluded_sample_best(stride: int = 8, k: int = 5) -> None:
    """Exclude each query's best sampled items: the threshold must come from the sample after exclusion."""
    pb = make_problem(3, 800, 8, 4, 64, seed=11)
    ref = reference_scores(pb, torch.float32)
    sampled = ref[:, ::stride]
    best_sampled = torch.sort(sampled, dim=1, descending=True, stable=True).indices[:, : k + 2] * stride
    hit = (torch.arange(ref.shape[1])[None, :, None] == best_sampled[:, None, :]).any(2)
    ref = ref.masked_fill(hit, -math.inf)
    ref_values, ref_ids = torch.sort(ref, dim=1, descending=True, stable=True)
    scores, positions = run_two_pass(pb, k, torch.float32, best_sampled, sample_stride=stride, num_splits=2)
    assert not set(positions.flatten().tolist()) & set(best_sampled.flatten().tolist())
    assert_same_topk(scores, positions, ref_values[:, :k], ref_ids[:, :k], rtol=0, atol=2e-4)


def check_overflow_falls_back(caplog) -> None:
    """Thresholds that let everything through and a capacity of k: the running top-k answers, logged."""
    from rails.kernels.mol_topk_triton import EMPTY_KEY

    pb = make_problem(2, 300, 8, 4, 64, seed=4)
    thresholds = torch.full((2,), EMPTY_KEY, dtype=torch.int64)
    kw = {"thresholds": thresholds, "capacity": 10, "num_splits": 2}
    with caplog:
        scores, positions = check_case(2, 300, 8, 4, 64, 10, torch.float32, problem=pb, **kw)
    assert any("searching these 2 queries again" in line for line in caplog.lines), caplog.lines
    # the same thresholds with room for every item: no fallback, the same top-k from the candidates
    kw["capacity"] = 300
    with caplog:
        check_case(2, 300, 8, 4, 64, 10, torch.float32, problem=pb, **kw)
    assert not caplog.lines


def check_exact_index_options() -> None:
    """ExactTopK(fused_sample_stride=, fused_prune=) searches like the PyTorch path (ids, up to ties)."""
    from rails.retrieval import ExactTopK
    from tests.test_retrieval_fused import random_mol

    head = random_mol(3, 2, 8, seed=2)
    gen = torch.Generator().manual_seed(3)
    items, queries = torch.randn(500, 20, generator=gen), torch.randn(4, 24, generator=gen)
    ids = torch.randperm(2000, generator=gen)[:500] + 1
    exclude = ids[None, :3].repeat(4, 1)
    want = ExactTopK(fused=False).build(head, items, ids).search(queries, 10, exclude=exclude)
    for stride, prune in ((8, False), (0, False), (None, True)):
        index = ExactTopK(fused=True, fused_sample_stride=stride, fused_prune=prune).build(head, items, ids)
        got = index.search(queries, 10, exclude=exclude)
        assert_same_topk(*got, *want, rtol=0, atol=2e-4)


class _Captured(logging.Handler):
    """A minimal caplog for the interpreter subprocess (no pytest fixtures there)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self) -> _Captured:
        self.lines = []
        logging.getLogger("rails.kernels.mol_topk_triton").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("rails.kernels.mol_topk_triton").removeHandler(self)


def _two_pass_case(batch, items, pq, px, dim, k, dtype, **kw):
    """check_case with the kernel call replaced by the two-pass search."""
    import tests.test_mol_topk_kernel as one_pass

    original = one_pass.run_kernel
    one_pass.run_kernel = lambda pb, k_, dtype_, device, exclude, **rest: run_two_pass(  # noqa: E731
        pb, k_, dtype_, exclude, **rest
    )
    try:
        return check_case(batch, items, pq, px, dim, k, dtype, **kw)
    finally:
        one_pass.run_kernel = original


def _interpreter_main() -> None:
    torch.set_num_threads(1)
    assert run_kernel is not None  # the one-pass runner stays importable for check_case
    _two_pass_case(5, 1200, 8, 4, 64, 10, torch.float32, sample_stride=8, num_splits=3)
    _two_pass_case(3, 900, 8, 8, 32, 1, torch.float32, sample_stride=16)
    _two_pass_case(4, 700, 8, 4, 64, 20, torch.bfloat16, sample_stride=4, num_splits=2)
    _two_pass_case(2, 600, 3, 2, 8, 100, torch.float32, sample_stride=8)  # k > the 75-item sample: one pass
    _two_pass_case(2, 384, 8, 4, 64, 10, torch.float32, prunable=True, sample_stride=4, block_x=16, block_q=2)
    _two_pass_case(
        5, 1200, 8, 4, 64, 10, torch.float32, sample_stride=8, block_x=16, step_tiles=2
    )  # emitted in steps
    check_excluded_sample_best()
    check_overflow_falls_back(_Captured())
    # through the retrieval layer (ExactTopK's fused_mol_search) with a head's own states, prune off
    from tests.test_retrieval_fused import check_fused

    check_fused("cpu", torch.float32, num_items=400, k=10, pq=3, px=2, dim=8, sample_stride=4, prune=False)
    check_exact_index_options()
    print("TWO_PASS_OK")


def test_two_pass_matches_float64_under_triton_interpreter():
    run_interpreted("tests.test_mol_topk_two_pass", "TWO_PASS_OK")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("batch", [1, 32, 256])
def test_two_pass_cuda_matches_float64(batch):
    def on_cuda(pb, k_, dtype_, device, exclude, **rest):
        cuda = {name: getattr(pb, name).cuda() for name in ("query_components", "query_gate", "w1", "b1")}
        cuda |= {name: getattr(pb, name).cuda() for name in ("item_components", "item_gate", "w2", "b2")}
        moved = type(pb)(**cuda, temperature=pb.temperature)
        return run_two_pass(moved, k_, dtype_, None if exclude is None else exclude.cuda(), **rest)

    import tests.test_mol_topk_kernel as one_pass

    original = one_pass.run_kernel
    one_pass.run_kernel = on_cuda
    try:
        check_case(batch, 200_003, 8, 4, 64, 100, torch.bfloat16, device="cuda", sample_stride=16, tune=False)
    finally:
        one_pass.run_kernel = original


if __name__ == "__main__":
    _interpreter_main()
