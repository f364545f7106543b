"""Fused Triton HSTU attention vs the float64 plain-PyTorch reference (forward and backward, ragged rows).

On CUDA (``gpu`` marker) at paper head sizes in float32 (TF32 dots) and bf16; on CPU through the Triton
interpreter (``TRITON_INTERPRET=1``, run in a subprocess so the flag is set before Triton is imported).
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


def make_inputs(
    lengths: list[int], n: int, heads: int, dqk: int, dv: int, device: str, dtype: torch.dtype, seed: int = 0
) -> tuple[list[torch.Tensor], tuple]:
    """Random q, k, v (``dtype``), bias tables (float32) and timestamps; returns (leaves, extra args)."""
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    q = torch.randn(b, n, heads, dqk, generator=g)
    k = torch.randn(b, n, heads, dqk, generator=g)
    v = torch.randn(b, n, heads, dv, generator=g)
    pos = torch.randn(n + 5, generator=g)
    tsw = torch.randn(129, generator=g)
    gaps = torch.exp(torch.rand(b, n + 1, generator=g) * 18).long()
    times = 1_000_000_000 + gaps.cumsum(1)
    leaves = [x.to(device=device, dtype=dtype) for x in (q, k, v)] + [x.to(device) for x in (pos, tsw)]
    extra = (times[:, :n].to(device), times[:, 1:].to(device), torch.tensor(lengths, device=device))
    return leaves, extra


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.double() - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


def check_against_reference(
    lengths: list[int],
    n: int,
    heads: int,
    dqk: int,
    dv: int,
    device: str,
    dtype: torch.dtype,
    tol: float,
    block: int = 64,
) -> None:
    """Forward and all five gradients of the kernel within ``tol`` (relative max error) of float64."""
    from rails.kernels.hstu_attention_triton import hstu_attention_triton

    leaves, (ts, next_ts, lens) = make_inputs(lengths, n, heads, dqk, dv, device, dtype)
    normalizer, divisor = float(n + 11), 0.301
    fast_leaves = [x.clone().requires_grad_() for x in leaves]
    ref_leaves = [x.detach().double().requires_grad_() for x in leaves]
    out = hstu_attention_triton(
        *fast_leaves, ts, next_ts, lens, normalizer, divisor, block_m=block, block_n=block
    )
    ref = hstu_attention_reference(*ref_leaves, ts, next_ts, lens, normalizer, divisor)
    assert out.dtype == dtype and out.shape == ref.shape
    padded_rows = torch.arange(n, device=device)[None, :] >= lens[:, None]
    assert torch.all(out[padded_rows] == 0)
    assert relative_error(out, ref) < tol, ("forward", relative_error(out, ref))
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1)).to(device)
    out.backward(grad.to(dtype))
    ref.backward(grad.double())
    for name, fast, slow in zip(("q", "k", "v", "w_pos", "w_ts"), fast_leaves, ref_leaves):
        assert fast.grad is not None and fast.grad.dtype == fast.dtype, name
        err = relative_error(fast.grad, slow.grad)
        assert err < tol, (name, err)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 5e-3), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize(
    ("lengths", "n", "heads", "dqk", "dv"),
    [
        ([200, 131, 1, 64], 200, 2, 25, 25),  # ML-1M HSTU-large heads, ragged, N not a tile multiple
        ([50, 17, 33], 50, 8, 8, 8),  # Books heads (d < 16 is padded inside the kernel)
        ([1024, 700], 1024, 2, 32, 32),
    ],
)
def test_triton_matches_reference_cuda(lengths, n, heads, dqk, dv, dtype, tol) -> None:
    check_against_reference(lengths, n, heads, dqk, dv, "cuda", dtype, tol)


@pytest.mark.gpu
@cuda
def test_hstu_encoder_triton_equals_torch_cuda() -> None:
    from rails.batch import SequenceBatch
    from rails.models.encoders import HSTU

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
    outputs = []
    for impl in ("torch", "triton"):
        model.set_attention_impl(impl)
        model.zero_grad()
        emb.grad = None
        out = model(emb, batch)
        out[batch.valid_mask].square().sum().backward()
        outputs.append((out[batch.valid_mask].detach(), emb.grad.clone(), model.layers[0].uvqk.grad.clone()))
    for torch_value, triton_value in zip(*outputs):
        assert relative_error(triton_value, torch_value.double()) < 1e-2


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
    torch.set_num_threads(1)
    # Ragged rows, N not a multiple of the tile, a length-1 row, d < 16.
    check_against_reference([21, 9, 1], 21, 2, 5, 6, "cpu", torch.float32, 1e-5, block=16)
    check_against_reference([40, 33], 40, 1, 16, 16, "cpu", torch.float32, 1e-5, block=16)
