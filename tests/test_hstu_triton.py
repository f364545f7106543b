"""Fused Triton HSTU attention vs the plain-PyTorch reference (forward and all five gradients, ragged rows).

On CUDA (``gpu`` marker; < 60 s in total on an H100): float64 reference comparisons at N <= 256 in float32
(TF32 dots) and bf16, one bf16 N = 1024 comparison against the float32 torch path, and the HSTU encoder with
both implementations. On CPU through the Triton interpreter (``TRITON_INTERPRET=1``, run in a subprocess so
the flag is set before Triton is imported): tiny shapes covering uneven tiles, several band chunks, unsorted
timestamps (many time buckets per tile) and clamped buckets.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rails.models.encoders.hstu_attention import hstu_attention_reference

REPO_ROOT = Path(__file__).resolve().parents[1]
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
NAMES = ("q", "k", "v", "w_pos", "w_ts")


def make_inputs(
    lengths: list[int],
    n: int,
    heads: int,
    dqk: int,
    dv: int,
    device: str,
    dtype: torch.dtype,
    seed: int = 0,
    shuffle_times: bool = False,
) -> tuple[list[torch.Tensor], tuple]:
    """Random q, k, v (``dtype``), bias tables (float32) and timestamps; returns (leaves, extra args).

    Gaps are log-uniform in [1, e^18] s (buckets 0..59); ``shuffle_times`` permutes each row's timestamps
    and makes some of them equal (bucket 0) or 10^18 s apart (clamped to the last bucket).
    """
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    q = torch.randn(b, n, heads, dqk, generator=g)
    k = torch.randn(b, n, heads, dqk, generator=g)
    v = torch.randn(b, n, heads, dv, generator=g)
    pos = torch.randn(n + 5, generator=g)
    tsw = torch.randn(129, generator=g)
    gaps = torch.exp(torch.rand(b, n + 1, generator=g) * 18).long()
    times = 1_000_000_000 + gaps.cumsum(1)
    if shuffle_times:
        times = torch.gather(times, 1, torch.argsort(torch.rand(b, n + 1, generator=g), dim=1))
        times[:, ::5] = times[:, :1]
        times[:, 3::7] = 10**18
    leaves = [x.to(device=device, dtype=dtype) for x in (q, k, v)] + [x.to(device) for x in (pos, tsw)]
    extra = (times[:, :n].to(device), times[:, 1:].to(device), torch.tensor(lengths, device=device))
    return leaves, extra


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|, in float64."""
    actual, expected = actual.detach().double(), expected.detach().double()
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


def run_both(
    lengths: list[int],
    n: int,
    heads: int,
    dqk: int,
    dv: int,
    device: str,
    dtype: torch.dtype,
    ref_dtype: torch.dtype,
    blocks: tuple[int | None, int | None] = (None, None),
    shuffle_times: bool = False,
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """(kernel [out, 5 grads], reference [out, 5 grads] computed in ``ref_dtype``, lengths)."""
    from rails.kernels.hstu_attention_triton import hstu_attention_triton

    leaves, (ts, next_ts, lens) = make_inputs(
        lengths, n, heads, dqk, dv, device, dtype, shuffle_times=shuffle_times
    )
    normalizer, divisor = float(n + 11), 0.301
    fast_leaves = [x.clone().requires_grad_() for x in leaves]
    ref_leaves = [x.detach().to(ref_dtype).requires_grad_() for x in leaves]
    out = hstu_attention_triton(
        *fast_leaves, ts, next_ts, lens, normalizer, divisor, block_m=blocks[0], block_n=blocks[1]
    )
    ref = hstu_attention_reference(*ref_leaves, ts, next_ts, lens, normalizer, divisor)
    assert out.dtype == dtype and out.shape == ref.shape
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1)).to(device)
    out.backward(grad.to(dtype))
    ref.backward(grad.to(ref_dtype))
    for name, leaf in zip(NAMES, fast_leaves):
        assert leaf.grad is not None and leaf.grad.dtype == leaf.dtype, name
    return [out] + [x.grad for x in fast_leaves], [ref] + [x.grad for x in ref_leaves], lens


def check_against_reference(
    lengths: list[int],
    n: int,
    heads: int,
    dqk: int,
    dv: int,
    device: str,
    dtype: torch.dtype,
    tol: float,
    blocks: tuple[int | None, int | None] = (None, None),
    shuffle_times: bool = False,
) -> None:
    """Forward and all five gradients within ``tol`` (relative max error) of the float64 reference."""
    fast, ref, lens = run_both(
        lengths, n, heads, dqk, dv, device, dtype, torch.float64, blocks, shuffle_times
    )
    padded_rows = torch.arange(n, device=device)[None, :] >= lens[:, None]
    assert torch.all(fast[0][padded_rows] == 0)
    for name, actual, expected in zip(("out", *NAMES), fast, ref):
        err = relative_error(actual, expected)
        assert err < tol, (name, err)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


FP32, BF16 = (torch.float32, 5e-3), (torch.bfloat16, 3e-2)  # (dtype, relative tolerance)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize(
    ("lengths", "n", "heads", "dqk", "dv", "blocks", "dtype", "tol"),
    [  # every (shape, dtype) compiles its own kernels (seconds each): both dtypes on the real shape
        ([200, 131, 1, 64], 200, 2, 25, 25, (None, None), *FP32),  # ML-1M HSTU-large, ragged, N % 64 != 0
        ([200, 131, 1, 64], 200, 2, 25, 25, (None, None), *BF16),
        ([50, 17, 33], 50, 8, 8, 8, (None, None), *BF16),  # Books head count, d < 16 padded in the kernel
        ([256, 190], 256, 2, 32, 32, (64, 32), *FP32),  # uneven tiles; bias kernel on 32-tiles, 8 bands
    ],
)
def test_triton_matches_float64_cuda(lengths, n, heads, dqk, dv, blocks, dtype, tol) -> None:
    check_against_reference(lengths, n, heads, dqk, dv, "cuda", dtype, tol, blocks)


@pytest.mark.gpu
@cuda
def test_triton_bf16_long_matches_float32_torch_cuda() -> None:
    """N = 1024 (several band chunks at 64-tiles): bf16 kernel vs the float32 materialising path."""
    torch.backends.cuda.matmul.allow_tf32 = False
    fast, ref, _ = run_both([1024, 700], 1024, 2, 25, 25, "cuda", torch.bfloat16, torch.float32)
    for name, actual, expected in zip(("out", *NAMES), fast, ref):
        err = relative_error(actual, expected)
        assert err < 3e-2, (name, err)


@pytest.mark.gpu
@cuda
def test_hstu_encoder_triton_equals_torch_cuda() -> None:
    from rails.batch import SequenceBatch
    from rails.models.encoders import HSTU, SequenceHistory

    torch.manual_seed(0)
    model = HSTU(dim=50, max_seq_len=200, num_blocks=2, num_heads=2, qk_dim=25, v_dim=25).cuda().eval()
    lengths = torch.tensor([200, 90, 3])
    valid = torch.arange(200)[None, :] < lengths[:, None]
    times = 1_000_000_000 + torch.randint(1, 10**6, (3, 201)).cumsum(1)
    batch = SequenceBatch(
        user_ids=torch.arange(3),
        history_ids=torch.randint(1, 100, (3, 200)) * valid,
        history_timestamps=times[:, :200] * valid,
        history_ratings=valid.float(),
        lengths=lengths,
        target_ids=torch.randint(1, 100, (3,)),
        target_timestamps=times[torch.arange(3), lengths],
        target_ratings=torch.ones(3),
    ).to("cuda")
    emb = torch.randn(3, 200, 50, device="cuda", requires_grad=True)
    # The output is L2-normalised, so its squared norm is constant: project on fixed random directions
    # instead, or every gradient would be zero up to rounding.
    directions = torch.randn(int(lengths.sum()), 50, device="cuda")
    outputs = []
    for impl in ("torch", "triton"):
        model.set_attention_impl(impl)
        model.zero_grad()
        emb.grad = None
        out = model(emb, SequenceHistory.of(batch))
        (out[batch.valid_mask] * directions).sum().backward()
        layer = model.layers[0]
        outputs.append(
            (
                out[batch.valid_mask].detach(),
                emb.grad.clone(),
                layer.uvqk.grad.clone(),
                layer.bias.position_weights.grad.clone(),
                layer.bias.time_weights.grad.clone(),
            )
        )
    for torch_value, triton_value in zip(*outputs):
        assert relative_error(triton_value, torch_value) < 1e-2


def test_block_sizes_are_validated() -> None:
    pytest.importorskip("triton")
    from rails.kernels.hstu_attention_triton import hstu_attention_triton

    leaves, extra = make_inputs([4], 4, 1, 4, 4, "cpu", torch.float32)
    with pytest.raises(ValueError, match="block_m must be a power of two"):
        hstu_attention_triton(*leaves, *extra, 15.0, block_m=24)


def test_triton_interpreter_cpu() -> None:
    """Tiny shapes under the Triton CPU interpreter (subprocess unless TRITON_INTERPRET=1 is already set)."""
    pytest.importorskip("triton")
    if not INTERPRETED:
        env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO_ROOT)}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                f"{__file__}::test_triton_interpreter_cpu",
                "-q",
                "-x",
                "-p",
                "no:cacheprovider",
            ],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        assert "1 passed" in result.stdout, result.stdout[-2000:]
        return
    from rails.kernels import hstu_attention_backward as module

    torch.set_num_threads(1)
    # Ragged rows, N not a multiple of the tile, a length-1 row, d < 16.
    check_against_reference([21, 9, 1], 21, 2, 5, 6, "cpu", torch.float32, 1e-5, blocks=(16, 16))
    # Uneven query/key tiles (bias kernel on 16-tiles: 4 bands), unsorted / equal / clamped timestamps.
    check_against_reference([36, 20], 36, 2, 16, 8, "cpu", torch.float32, 1e-5, (32, 16), shuffle_times=True)
    # Bands split over several programs (2 tiles per chunk), and the reverse tile shapes.
    chunk = module.BAND_CHUNK_TILES
    module.BAND_CHUNK_TILES = 2
    try:
        check_against_reference([34, 29], 34, 1, 16, 16, "cpu", torch.float32, 1e-5, blocks=(16, 32))
    finally:
        module.BAND_CHUNK_TILES = chunk
