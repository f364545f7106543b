"""The Triton inverted-list scan (rails.kernels.list_scan_triton) against float64 and the PyTorch scan.

Under the Triton CPU interpreter (a subprocess, ``python -m tests.test_list_scan``): kernel scores equal a
float64 reference at every filled slot (partial slot blocks, a key width that is not a power of two, lists
probed by several queries) and ``-inf`` at padding; ``InvertedLists.scan`` returns the same candidates with
the kernel as with the PyTorch gather path (random keys: no ties), exclusions included. On CUDA (``gpu``):
the same with bf16 keys at benchmark-like sizes.
"""

from __future__ import annotations

import math

import pytest
import torch

from rails.retrieval.indexes import inverted_lists as ivf
from tests.triton_interpreter import run_interpreted


def reference_scores(queries, lists, members, keys, fill):
    """(B, n * S) float64 scores, -inf at padding slots."""
    probed = keys.double()[members[lists].clamp_min(0)]  # (B, n, S, D)
    scores = torch.einsum("bnsd,bd->bns", probed, queries.double())
    slots = torch.arange(members.shape[1], device=keys.device)
    padding = slots[None, None, :] >= fill[lists][:, :, None]
    return scores.masked_fill(padding, -math.inf).flatten(1)


def random_lists(num_items, num_lists, dim, list_size, dtype, device, seed):
    gen = torch.Generator().manual_seed(seed)
    keys = torch.randn(num_items, dim, generator=gen)
    labels = torch.randint(0, num_lists, (num_items,), generator=gen)
    return ivf.InvertedLists(keys.to(device), labels.to(device), num_lists, list_size, dtype)


def check_scores(lists_obj, batch, probes, seed, atol):
    from rails.kernels.list_scan_triton import list_scan_scores

    device = lists_obj.keys.device
    gen = torch.Generator().manual_seed(seed)
    queries = torch.randn(batch, lists_obj.keys.shape[1], generator=gen).to(device, lists_obj.keys.dtype)
    probed = torch.stack([torch.randperm(lists_obj.num_lists, generator=gen)[:probes] for _ in range(batch)])
    probed = probed.to(device)
    got = list_scan_scores(queries, probed, lists_obj.members, lists_obj.keys, lists_obj.fill)
    want = reference_scores(queries, probed, lists_obj.members, lists_obj.keys, lists_obj.fill)
    assert got.dtype == torch.float32 and got.shape == want.shape
    padding = torch.isinf(want)
    assert torch.equal(torch.isinf(got), padding) and bool((got[padding] < 0).all())
    err = float((got.double() - want).masked_fill(padding, 0).abs().max())
    assert err <= atol, f"max |kernel - float64| = {err:.3e} > {atol:.1e}"
    assert int((~padding).sum()) == int(lists_obj.fill[probed].sum())  # every member scored once
    return queries, probed


def check_scan_equals_pytorch(lists_obj, queries, probed, monkeypatch_off):
    gen = torch.Generator().manual_seed(9)
    members = lists_obj.members[probed].flatten(1)
    exclude = torch.full((queries.shape[0], 5), -1, dtype=torch.int64)
    for row in range(queries.shape[0]):  # exclude real members of the row's probed lists (and one -1)
        valid = members[row][members[row] >= 0].cpu()
        exclude[row, :4] = valid[torch.randperm(valid.numel(), generator=gen)[:4]]
    exclude = exclude.to(queries.device)
    for candidates in (7, 40, 10_000):
        with_kernel = lists_obj.scan(queries, probed, candidates, exclude)
        monkeypatch_off(True)
        try:
            with_torch = lists_obj.scan(queries, probed, candidates, exclude, scan_elements=1 << 10)
        finally:
            monkeypatch_off(False)
        assert with_kernel.shape == with_torch.shape
        assert torch.equal(torch.sort(with_kernel, dim=1).values, torch.sort(with_torch, dim=1).values)
        for row in range(queries.shape[0]):  # a row's exclusions never come back (other rows may keep them)
            kept, banned = with_kernel[row], exclude[row]
            assert not bool(torch.isin(kept[kept >= 0], banned[banned >= 0]).any())


def _interpreter_main() -> None:
    torch.set_num_threads(1)
    original = ivf.triton_usable

    def switch(torch_path: bool) -> None:
        ivf.triton_usable = (lambda device: False) if torch_path else original

    # 400 items in 9 clusters, lists of at most 70 slots (two slot blocks, the second partial), D = 40
    lists_obj = random_lists(400, 9, 40, 70, None, torch.device("cpu"), seed=0)
    assert lists_obj.keys.shape == (400, 40)  # the corpus keys themselves, no per-list copy
    assert ivf.triton_usable(torch.device("cpu")), "run with TRITON_INTERPRET=1"
    queries, probed = check_scores(lists_obj, batch=3, probes=4, seed=1, atol=1e-9 + 1e-5)
    check_scan_equals_pytorch(lists_obj, queries, probed, switch)
    # one list probed by every query, one query probing every list
    check_scores(lists_obj, batch=2, probes=lists_obj.num_lists, seed=2, atol=1e-5)
    print("LIST SCAN OK")


def test_list_scan_matches_float64_and_pytorch_under_the_triton_interpreter() -> None:
    run_interpreted("tests.test_list_scan", "LIST SCAN OK", timeout=600)


def test_shapes_are_checked() -> None:
    pytest.importorskip("triton")
    from rails.kernels.list_scan_triton import list_scan_scores

    members, keys, fill = torch.zeros(4, 8, dtype=torch.int64), torch.zeros(30, 16), torch.full((4,), 8)
    with pytest.raises(ValueError, match="queries have 15 dimensions, keys 16"):
        list_scan_scores(torch.zeros(2, 15), torch.zeros(2, 3, dtype=torch.int64), members, keys, fill)
    with pytest.raises(ValueError, match="3 rows of lists for 2 queries"):
        list_scan_scores(torch.zeros(2, 16), torch.zeros(3, 1, dtype=torch.int64), members, keys, fill)
    with pytest.raises(ValueError, match=r"\(L, S\) members"):
        list_scan_scores(torch.zeros(2, 16), torch.zeros(2, 1, dtype=torch.int64), members[0], keys, fill)


@pytest.mark.gpu
def test_list_scan_on_cuda_matches_float64_and_pytorch() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    device = torch.device("cuda")
    # benchmark-like: bf16 keys of 8x4x64 heads (D = 256), 2,000-slot lists, B = 32, 32 probes
    check_scores(random_lists(200_000, 150, 256, 2000, torch.bfloat16, device, seed=3), 32, 32, 4, atol=2e-3)
    # candidates equal to the PyTorch path's on fp32 keys (its bmm would round bf16 scores: ties)
    lists32 = random_lists(20_000, 40, 64, 700, None, device, seed=5)
    queries, probed = check_scores(lists32, batch=8, probes=6, seed=6, atol=1e-4)
    original = ivf.triton_usable

    def switch(torch_path: bool) -> None:
        ivf.triton_usable = (lambda device: False) if torch_path else original

    try:
        check_scan_equals_pytorch(lists32, queries, probed, switch)
    finally:
        ivf.triton_usable = original


if __name__ == "__main__":
    _interpreter_main()
