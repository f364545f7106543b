"""Fused MoL training mixture: gating MLP, softmax, softmax dropout and mixture in one pass (Triton).

The PyTorch mixture of a sampled-softmax step (``rails.models.similarity.mol_sampled.mix_sampled``) runs the
query-item gating MLP over every (query position, sampled item) pair: at ML-1M shapes (M = 13,612 positions,
X = 129 columns, P = 32 pairs, H = 128 hidden units) its (M, X, H) hidden activations alone are 0.9 GB in
fp32, written, read and saved for the backward by a dozen kernels. Here one kernel per direction keeps
everything of a block of rows on chip: the forward writes only the (M, X) scores and the positives' (M, P)
weights, the backward recomputes its block and writes (M, X, P) gradients of the logits and of the gate
pre-activation plus per-program partial sums of the MLP weight gradients (summed here). Kernel code:
:mod:`rails.kernels.mol_mixing_kernel`.

Only the paper's ``glu_silu`` combination without query-item input dropout is fused; the caller checks
that (``rails.models.similarity.mol_fused_mixing``). Tensors are fp32 inside; ``keep`` is the training
dropout mask (bool or uint8, the caller draws it) with ``scale = 1 / (1 - p)``.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import torch
from torch import Tensor

from rails.kernels.mol_mixing_kernel import (
    mol_mixing_bwd_kernel,
    mol_mixing_bwd_rows_kernel,
    mol_mixing_fwd_kernel,
)

log = logging.getLogger(__name__)  # kernels import no other rails layer: the stdlib logger, under 'rails'

BLOCK_ROWS = 64  # rows (pairs) per block: (64, HP) fp32 hidden tiles stay in registers at H = 128


def _pad(n: int) -> int:
    """tl.dot needs every dim >= 16 and powers of two."""
    return max(16, 1 << (max(n, 1) - 1).bit_length())


def _keep_arg(keep: Tensor | None, like: Tensor) -> Tensor:
    if keep is None:
        return like  # never read (HAS_DROPOUT=0); any pointer will do
    if keep.shape != like.shape:
        raise ValueError(
            f"keep mask must have the logits' shape {tuple(like.shape)}, got {tuple(keep.shape)}"
        )
    return keep.contiguous() if keep.dtype == torch.uint8 else keep.to(torch.uint8).contiguous()


def gate_rows(item_gate: Tensor) -> Tensor:
    """(M, X, P) item gate as fp32 rows the kernels address as ``row * stride + p`` over the M * X rows.

    A view whose rows sit at one stride with unit column stride (e.g. a column slice of the one-gather table
    of the sampled step) is used in place; anything else (a broadcast, a transposed layout) is copied.
    """
    gate = item_gate.float()
    _, x, p = gate.shape
    if gate.stride(2) == 1 and gate.stride(1) >= p and gate.stride(0) == x * gate.stride(1):
        return gate
    return gate.contiguous()


def row_stride(gate: Tensor) -> int:
    """The row stride of :func:`gate_rows`' result."""
    return gate.stride(1) if gate.shape[1] > 1 else gate.stride(0)


class MixingInputs(NamedTuple):
    """What both kernels read: the mixture's inputs and settings.

    Attributes:
        query_gate: (M, P) query-only gate part.
        item_gate: (M, X, P) item-only gate part of each sampled item.
        logits: (M, X, P) temperature-scaled pair logits; column 0 of X is each query's positive.
        w1, b1: (H, P), (H,) first layer of the query-item MLP; w2, b2: (P, H), (P,) second layer.
        keep: (M, X, P) bool / uint8 dropout mask of the softmax weights, or None (no dropout, no
            renormalisation).
        scale: 1 / (1 - p) for the kept weights.
        eps: floor of the renormalising sum.
        precision: ``tl.dot`` input precision (``ieee`` or ``tf32``).
    """

    query_gate: Tensor
    item_gate: Tensor
    logits: Tensor
    w1: Tensor
    b1: Tensor
    w2: Tensor
    b2: Tensor
    keep: Tensor | None
    scale: float
    eps: float
    precision: str = "ieee"

    def pointers(self) -> tuple[Tensor, ...]:
        """L, IG, QG, W1, B1, W2, B2, KEEP as the kernels take them (fp32; KEEP uint8; contiguous, except IG,
        which may be rows of any stride: :func:`gate_rows`, its stride is :func:`row_stride` of it)."""
        logits = self.logits.float().contiguous()
        rest = (self.query_gate, self.w1, self.b1, self.w2, self.b2)
        return (logits, gate_rows(self.item_gate), *(t.float().contiguous() for t in rest),
                _keep_arg(self.keep, logits))  # fmt: skip

    def constants(self) -> dict[str, Any]:
        """The compile-time arguments both kernels share."""
        p, h = self.logits.shape[2], self.w1.shape[0]
        return {"P": p, "H": h, "PP": _pad(p), "HP": _pad(h),
                "HAS_DROPOUT": self.keep is not None, "PRECISION": self.precision}  # fmt: skip


def fused_mixing_forward(inputs: MixingInputs) -> tuple[Tensor, Tensor]:
    """Scores and positive weights of the sampled mixture (inputs: :class:`MixingInputs`).

    Returns:
        (M, X) fp32 scores and (M, P) fp32 positive weights (post-dropout, renormalised).
    """
    m, x, p = inputs.logits.shape
    device = inputs.logits.device
    scores = torch.empty(m, x, device=device, dtype=torch.float32)
    positive = torch.zeros(m, p, device=device, dtype=torch.float32)
    grid = (triton_cdiv(m * x, BLOCK_ROWS),)
    pointers = inputs.pointers()
    mol_mixing_fwd_kernel[grid](
        *pointers, scores, positive, m * x, x, float(inputs.scale), float(inputs.eps), row_stride(pointers[1]),
        **inputs.constants(), BN=BLOCK_ROWS, num_warps=4,
    )  # fmt: skip
    return scores, positive


def fused_mixing_backward(
    inputs: MixingInputs,
    grad_scores: Tensor,
    grad_positive: Tensor | None,
    programs: int | None = None,
    variant: str | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of :func:`fused_mixing_forward`, by one of two kernels (:data:`BACKWARD_VARIANTS`):

    - ``persistent``: each program walks several row blocks and keeps its share of the MLP weight gradients
      on chip (nothing of size (N, H) in memory; register-bound). On CUDA its tile (rows per block), warps
      and programs per SM are autotuned among :data:`BACKWARD_CONFIGS`; elsewhere the first setting runs.
    - ``rows``: one program per row block and no accumulators; it writes SiLU(z) and dz (N, H) in fp32
      (2 x 0.9 GB at ML-1M shapes) and two matmuls form dW1 = dz^T L and dW2 = dA^T SiLU(z).

    Args:
        inputs: those of the forward.
        grad_scores: (M, X) upstream gradient of the scores; grad_positive: (M, P) of the positive weights
            or None.
        programs: persistent programs with the first configuration (tests; default: tuned on CUDA).
        variant: ``persistent`` or ``rows``; None: on CUDA the faster of the two on these inputs, timed once
            per (P, H, dropout, positive gradient, precision) and logged; elsewhere ``persistent``.

    Returns:
        dlogits (M, X, P), dA (M, X, P) (gradient of the gate pre-activation ``q_gate * i_gate + qi``),
        dW1 (H, P), db1 (H,), dW2 (P, H), db2 (P,), all fp32.
    """
    if variant is None:
        auto = inputs.logits.is_cuda and programs is None
        variant = _fastest_variant(inputs, grad_scores, grad_positive) if auto else "persistent"
        if variant == "rows":
            return _rows_or_persistent(inputs, grad_scores, grad_positive)
    if variant == "rows":
        return _backward_rows(inputs, grad_scores, grad_positive)
    if variant != "persistent":
        raise ValueError(f"backward variant must be one of {BACKWARD_VARIANTS}, got {variant!r}")
    return _backward_persistent(inputs, grad_scores, grad_positive, programs)


BACKWARD_VARIANTS = ("persistent", "rows")
_CHOSEN: dict[tuple, str] = {}


def _rows_or_persistent(
    inputs: MixingInputs, grad_scores: Tensor, grad_positive: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The chosen ``rows`` backward; a step larger than the timed one whose (N, H) rows do not fit in memory
    runs the persistent kernel instead, which is then kept (one warning)."""
    try:
        return _backward_rows(inputs, grad_scores, grad_positive)
    except torch.cuda.OutOfMemoryError:
        _CHOSEN[_variant_key(inputs, grad_positive)] = "persistent"
        torch.cuda.empty_cache()
        log.warning(
            "fused MoL mixing backward: the rows kernel ran out of memory; the persistent one from now on"
        )
    return _backward_persistent(inputs, grad_scores, grad_positive, None)


def _variant_key(inputs: MixingInputs, grad_positive: Tensor | None) -> tuple:
    """What the backward variant is chosen per: P, H, dropout, positive-weight gradient, precision."""
    return (inputs.logits.shape[2], inputs.w1.shape[0], inputs.keep is not None, grad_positive is not None,
            inputs.precision)  # fmt: skip


def _fastest_variant(inputs: MixingInputs, grad_scores: Tensor, grad_positive: Tensor | None) -> str:
    """The faster backward on these inputs (CUDA), timed on the first call of each setting and logged."""
    key = _variant_key(inputs, grad_positive)
    if key not in _CHOSEN:
        from triton.testing import do_bench

        timings: dict[str, float] = {}
        for name in BACKWARD_VARIANTS:
            try:
                timings[name] = do_bench(
                    lambda name=name: fused_mixing_backward(inputs, grad_scores, grad_positive, variant=name),
                    warmup=10,
                    rep=40,
                )
            except torch.cuda.OutOfMemoryError:  # ``rows`` stores two (N, H) fp32 tensors
                timings[name] = float("inf")
                torch.cuda.empty_cache()
        _CHOSEN[key] = min(timings, key=timings.__getitem__)
        shown = ", ".join(f"{name} {ms:.2f} ms" for name, ms in timings.items())
        log.info(f"fused MoL mixing backward at P, H = {key[0]}, {key[1]}: {shown}; using {_CHOSEN[key]}")
    return _CHOSEN[key]


def _backward_rows(
    inputs: MixingInputs, grad_scores: Tensor, grad_positive: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The ``rows`` backward (see :func:`fused_mixing_backward`)."""
    m, x, p = inputs.logits.shape
    h, n = inputs.w1.shape[0], m * x
    device = inputs.logits.device
    dlogits = torch.empty(m, x, p, device=device, dtype=torch.float32)
    dgate = torch.empty(m, x, p, device=device, dtype=torch.float32)
    hidden = torch.empty(n, h, device=device, dtype=torch.float32)
    dz = torch.empty(n, h, device=device, dtype=torch.float32)
    pointers = inputs.pointers()
    dpos = grad_positive.float().contiguous() if grad_positive is not None else pointers[0]  # unread if None
    mol_mixing_bwd_rows_kernel[(triton_cdiv(n, BLOCK_ROWS),)](
        *pointers, grad_scores.float().contiguous(), dpos, dlogits, dgate, hidden, dz, n, x,
        float(inputs.scale), float(inputs.eps), row_stride(pointers[1]), **inputs.constants(), BN=BLOCK_ROWS,
        HAS_DPOSW=grad_positive is not None, num_warps=4,
    )  # fmt: skip
    da, logits = dgate.view(n, p), pointers[0].view(n, p)
    return dlogits, dgate, dz.T @ logits, dz.sum(0), da.T @ hidden, da.sum(0)


def _backward_persistent(
    inputs: MixingInputs, grad_scores: Tensor, grad_positive: Tensor | None, programs: int | None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The ``persistent`` backward (see :func:`fused_mixing_backward`)."""
    m, x, p = inputs.logits.shape
    h = inputs.w1.shape[0]
    device = inputs.logits.device
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    tuned = device.type == "cuda" and programs is None
    most = max(c.kwargs["PER_SM"] for c in BACKWARD_CONFIGS) * sms if tuned else None
    if not tuned:
        first = BACKWARD_CONFIGS[0]
        most = programs or first.kwargs["PER_SM"] * sms
        most = max(1, min(most, triton_cdiv(m * x, first.kwargs["BN"])))
    # partial weight gradients per program: zeros, so rows of programs a configuration does not launch add 0
    dw1 = torch.zeros(most, h, p, device=device, dtype=torch.float32)
    db1 = torch.zeros(most, h, device=device, dtype=torch.float32)
    dw2 = torch.zeros(most, p, h, device=device, dtype=torch.float32)
    db2 = torch.zeros(most, p, device=device, dtype=torch.float32)
    dlogits = torch.empty(m, x, p, device=device, dtype=torch.float32)
    dgate = torch.empty(m, x, p, device=device, dtype=torch.float32)
    pointers = inputs.pointers()
    dpos = grad_positive.float().contiguous() if grad_positive is not None else pointers[0]  # unread if None
    args = (*pointers, grad_scores.float().contiguous(), dpos, dlogits, dgate, dw1, db1, dw2, db2,
            m * x, x, float(inputs.scale), float(inputs.eps), row_stride(pointers[1]))  # fmt: skip
    if tuned:
        kernel = _tuned_backward()

        def grid(meta: dict[str, Any]) -> tuple[int]:
            return (max(1, min(meta["PER_SM"] * sms, triton_cdiv(m * x, meta["BN"]))),)

        kernel[grid](*args, **inputs.constants(), HAS_DPOSW=grad_positive is not None)
    else:
        config = BACKWARD_CONFIGS[0]
        mol_mixing_bwd_kernel[(most,)](
            *args, **inputs.constants(), HAS_DPOSW=grad_positive is not None, **config.kwargs,
            num_warps=config.num_warps,
        )  # fmt: skip
    return dlogits, dgate, dw1.sum(0), db1.sum(0), dw2.sum(0), db2.sum(0)


def _backward_configs() -> list[Any]:
    """(rows per block, programs per SM, warps) candidates; the first is round 8's fixed setting."""
    import triton

    settings = [(64, 4, 8), (32, 8, 4), (32, 8, 8), (32, 16, 4), (16, 16, 4), (64, 8, 8), (64, 2, 8)]
    return [triton.Config({"BN": bn, "PER_SM": per_sm}, num_warps=w) for bn, per_sm, w in settings]


BACKWARD_CONFIGS = _backward_configs()
"""Autotuning candidates of the backward (``BN`` rows per block, ``PER_SM`` programs per SM, warps)."""

_TUNED: list[Any] = []


def _tuned_backward() -> Any:
    """The autotuned backward kernel (built on first use; tuning is keyed on the compile-time settings)."""
    if not _TUNED:
        import triton

        keys = ["P", "H", "HAS_DROPOUT", "HAS_DPOSW", "PRECISION"]
        reset = ["DW1", "DB1", "DW2", "DB2"]  # partial sums: every timed configuration starts from zeros
        _TUNED.append(
            triton.autotune(configs=BACKWARD_CONFIGS, key=keys, reset_to_zero=reset)(mol_mixing_bwd_kernel)
        )
    return _TUNED[0]


def triton_cdiv(a: int, b: int) -> int:
    """Ceiling division (blocks of ``b`` covering ``a``)."""
    return -(-a // b)
