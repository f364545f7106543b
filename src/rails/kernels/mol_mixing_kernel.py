"""The ``@triton.jit`` part of the fused MoL training mixture (launchers and design: ``mol_mixing_triton``).

Rows are the N = M * X flattened (query position, sampled item) pairs; row n belongs to query m = n // X, and
row n is a query's positive when n % X == 0. Per block of ``BN`` rows, with P gate / logit columns padded to
``PP`` and the query-item MLP's H hidden units padded to ``HP`` (zero weights, ``-inf`` gates):

    z = L W1^T + b1, h = SiLU(z), qi = h W2^T + b2                      (two tensor-core matmuls)
    a = q_gate * i_gate + qi, s = SiLU(a), pi = softmax_P(s)            (glu_silu combination)
    pi' = pi * keep * scale (training dropout, ``keep`` given), S = max(sum pi', eps)
    score = sum_p pi'_p L_p / S, and for positive rows the weights pi' / S (the ``mi_loss`` input)

Without dropout (``HAS_DROPOUT=0``) pi' = pi and S = 1 (no renormalisation), as in the PyTorch mixer. The
backward recomputes the forward of its block (nothing of size (N, H) is ever stored) and writes dL and
dA = d(loss)/d(a) (the gate parts' gradients follow from it in PyTorch); each program walks several blocks
and keeps its share of the MLP weight gradients in registers, written once as a partial sum.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _silu(x):
    return x * tl.sigmoid(x)


@triton.jit
def _silu_grad(x):
    sig = tl.sigmoid(x)
    return sig * (1.0 + x * (1.0 - sig))


@triton.jit
def _block_forward(
    L, IG, QG, W1, B1, W2, B2, KEEP, rows, p, h, N, X, P: tl.constexpr, H: tl.constexpr, scale, eps, ig_stride,
    HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Recompute one block: logits, gate pre-activation a, softmax pi, pi', S, score (see the module doc)."""
    valid_n = rows < N
    valid_p = p < P
    valid_h = h < H
    cell = valid_n[:, None] & valid_p[None, :]
    logits = tl.load(L + rows[:, None] * P + p[None, :], mask=cell, other=0.0)
    item_gate = tl.load(IG + rows[:, None] * ig_stride + p[None, :], mask=cell, other=0.0)
    query_gate = tl.load(QG + (rows // X)[:, None] * P + p[None, :], mask=cell, other=0.0)
    w1t = tl.load(W1 + h[None, :] * P + p[:, None], mask=valid_p[:, None] & valid_h[None, :], other=0.0)
    w2t = tl.load(W2 + p[None, :] * H + h[:, None], mask=valid_h[:, None] & valid_p[None, :], other=0.0)
    b1 = tl.load(B1 + h, mask=valid_h, other=0.0)
    b2 = tl.load(B2 + p, mask=valid_p, other=0.0)
    z = tl.dot(logits, w1t, input_precision=PRECISION) + b1[None, :]  # (BN, HP)
    qi = tl.dot(_silu(z), w2t, input_precision=PRECISION) + b2[None, :]  # (BN, PP)
    a = query_gate * item_gate + qi
    s = tl.where(valid_p[None, :], _silu(a), float("-inf"))
    e = tl.exp(s - tl.max(s, axis=1)[:, None])
    pi = e / tl.sum(e, axis=1)[:, None]
    if HAS_DROPOUT:
        keep = tl.load(KEEP + rows[:, None] * P + p[None, :], mask=cell, other=0).to(tl.float32)
        dropped = pi * keep * scale
        total = tl.sum(dropped, axis=1)
        unclamped = total > eps
        norm = tl.maximum(total, eps)
    else:
        keep = pi * 0.0 + 1.0
        dropped = pi
        unclamped = rows < 0  # no renormalisation: S = 1 does not depend on pi
        norm = tl.sum(pi * 0.0, axis=1) + 1.0
    score = tl.sum(dropped * logits, axis=1) / norm
    return logits, item_gate, query_gate, w1t, w2t, z, a, pi, keep, dropped, unclamped, norm, score


@triton.jit
def mol_mixing_fwd_kernel(
    L, IG, QG, W1, B1, W2, B2, KEEP, SCORE, POSW, N, X, scale, eps, ig_stride,
    P: tl.constexpr, H: tl.constexpr, PP: tl.constexpr, HP: tl.constexpr, BN: tl.constexpr,
    HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Scores (N,) and the positive rows' weights (M, P) of one block of ``BN`` rows."""
    rows = (tl.program_id(0) * BN + tl.arange(0, BN)).to(tl.int64)  # N * P may pass 2**31
    p = tl.arange(0, PP)
    h = tl.arange(0, HP)
    _, _, _, _, _, _, _, _, _, dropped, _, norm, score = _block_forward(
        L, IG, QG, W1, B1, W2, B2, KEEP, rows, p, h, N, X, P, H, scale, eps, ig_stride, HAS_DROPOUT, PRECISION
    )
    valid_n = rows < N
    tl.store(SCORE + rows, score, mask=valid_n)
    positive = valid_n & (rows % X == 0)
    weights = dropped / norm[:, None]
    tl.store(POSW + (rows // X)[:, None] * P + p[None, :], weights, mask=positive[:, None] & (p < P)[None, :])


@triton.jit
def _block_backward(
    L, IG, QG, W1, B1, W2, B2, KEEP, DSCORE, DPOSW, rows, p, h, N, X, P: tl.constexpr, H: tl.constexpr,
    scale, eps, ig_stride, HAS_DROPOUT: tl.constexpr, HAS_DPOSW: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """One block's backward: (logits, SiLU(z), dA, dz, dL); dz is zero on rows past N."""
    valid_n = rows < N
    valid_p = p < P
    cell = valid_n[:, None] & valid_p[None, :]
    logits, item_gate, query_gate, w1t, w2t, z, a, pi, keep, dropped, unclamped, norm, score = (
        _block_forward(
            L, IG, QG, W1, B1, W2, B2, KEEP, rows, p, h, N, X, P, H, scale, eps, ig_stride, HAS_DROPOUT, PRECISION
        )
    )  # fmt: skip
    dscore = tl.load(DSCORE + rows, mask=valid_n, other=0.0)
    # score = sum pi' L / S:  dL = dscore pi' / S;  dpi' = dscore (L - score [S unclamped]) / S
    dlogits = dscore[:, None] * dropped / norm[:, None]
    live = tl.where(unclamped, 1.0, 0.0)
    ddropped = dscore[:, None] * (logits - (score * live)[:, None]) / norm[:, None]
    if HAS_DPOSW:  # positive rows: w = pi' / S feeds mi_loss
        positive = valid_n & (rows % X == 0)
        dw = tl.load(
            DPOSW + (rows // X)[:, None] * P + p[None, :],
            mask=positive[:, None] & valid_p[None, :],
            other=0.0,
        )
        weights = dropped / norm[:, None]
        ddropped += (dw - (tl.sum(dw * weights, axis=1) * live)[:, None]) / norm[:, None]
    if HAS_DROPOUT:
        dpi = ddropped * keep * scale
    else:
        dpi = ddropped
    ds = pi * (dpi - tl.sum(pi * dpi, axis=1)[:, None])  # softmax backward
    da = tl.where(cell, ds * _silu_grad(a), 0.0)
    # qi = SiLU(z) W2^T + b2;  z = L W1^T + b1
    dz = tl.dot(da, tl.trans(w2t), input_precision=PRECISION) * _silu_grad(z)  # (BN, HP)
    dz = tl.where(valid_n[:, None], dz, 0.0)
    dlogits += tl.dot(dz, tl.trans(w1t), input_precision=PRECISION)
    return logits, _silu(z), da, dz, dlogits


@triton.jit
def mol_mixing_bwd_kernel(
    L, IG, QG, W1, B1, W2, B2, KEEP, DSCORE, DPOSW, DL, DA, DW1, DB1, DW2, DB2, N, X, scale, eps, ig_stride,
    P: tl.constexpr, H: tl.constexpr, PP: tl.constexpr, HP: tl.constexpr, BN: tl.constexpr,
    HAS_DROPOUT: tl.constexpr, HAS_DPOSW: tl.constexpr, PRECISION: tl.constexpr, PER_SM: tl.constexpr,
):  # fmt: skip
    """dL, dA (N, P) of the blocks pid, pid + G, ...; this program's partial MLP weight gradients.

    ``PER_SM`` is read by the launcher only (programs per multiprocessor of the grid, a tuned setting).
    """
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    num_blocks = tl.cdiv(N, BN)
    p = tl.arange(0, PP)
    h = tl.arange(0, HP)
    valid_p = p < P
    dw1 = tl.zeros((HP, PP), dtype=tl.float32)
    dw2 = tl.zeros((PP, HP), dtype=tl.float32)
    db1 = tl.zeros((HP,), dtype=tl.float32)
    db2 = tl.zeros((PP,), dtype=tl.float32)
    for block in range(pid, num_blocks, programs):
        rows = (block * BN + tl.arange(0, BN)).to(tl.int64)
        cell = (rows < N)[:, None] & valid_p[None, :]
        logits, hidden, da, dz, dlogits = _block_backward(
            L, IG, QG, W1, B1, W2, B2, KEEP, DSCORE, DPOSW, rows, p, h, N, X, P, H, scale, eps, ig_stride, HAS_DROPOUT,
            HAS_DPOSW, PRECISION,
        )  # fmt: skip
        dw2 += tl.dot(tl.trans(da), hidden, input_precision=PRECISION)  # (PP, HP)
        db2 += tl.sum(da, axis=0)
        dw1 += tl.dot(tl.trans(dz), logits, input_precision=PRECISION)  # (HP, PP)
        db1 += tl.sum(dz, axis=0)
        tl.store(DL + rows[:, None] * P + p[None, :], dlogits, mask=cell)
        tl.store(DA + rows[:, None] * P + p[None, :], da, mask=cell)
    valid_h = h < H
    tl.store(DW1 + pid * H * P + h[:, None] * P + p[None, :], dw1, mask=valid_h[:, None] & valid_p[None, :])
    tl.store(DW2 + pid * P * H + p[:, None] * H + h[None, :], dw2, mask=valid_p[:, None] & valid_h[None, :])
    tl.store(DB1 + pid * H + h, db1, mask=valid_h)
    tl.store(DB2 + pid * P + p, db2, mask=valid_p)


@triton.jit
def mol_mixing_bwd_rows_kernel(
    L, IG, QG, W1, B1, W2, B2, KEEP, DSCORE, DPOSW, DL, DA, HID, DZ, N, X, scale, eps, ig_stride,
    P: tl.constexpr, H: tl.constexpr, PP: tl.constexpr, HP: tl.constexpr, BN: tl.constexpr,
    HAS_DROPOUT: tl.constexpr, HAS_DPOSW: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """dL, dA (N, P) and the rows the weight gradients need, SiLU(z) and dz (N, H), of one block: no
    accumulators on chip (the launcher forms dW1 = dz^T L, dW2 = dA^T SiLU(z) with two matmuls)."""
    rows = (tl.program_id(0) * BN + tl.arange(0, BN)).to(tl.int64)
    p = tl.arange(0, PP)
    h = tl.arange(0, HP)
    valid_n = rows < N
    cell = valid_n[:, None] & (p < P)[None, :]
    _, hidden, da, dz, dlogits = _block_backward(
        L, IG, QG, W1, B1, W2, B2, KEEP, DSCORE, DPOSW, rows, p, h, N, X, P, H, scale, eps, ig_stride, HAS_DROPOUT,
        HAS_DPOSW, PRECISION,
    )  # fmt: skip
    tl.store(DL + rows[:, None] * P + p[None, :], dlogits, mask=cell)
    tl.store(DA + rows[:, None] * P + p[None, :], da, mask=cell)
    wide = valid_n[:, None] & (h < H)[None, :]
    tl.store(HID + rows[:, None] * H + h[None, :], hidden, mask=wide)
    tl.store(DZ + rows[:, None] * H + h[None, :], dz, mask=wide)
