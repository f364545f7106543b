"""MoL float64 reference and shared helpers, plus the CUDA checks (no Hydra import: runs on the GPU box).

On a machine without hydra: ``python -m pytest tests/test_mol_gpu.py --noconftest -m gpu``.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from rails.models.similarity import MoLSimilarity

D_Q, D_X, P_Q, P_X, D_P, HASH = 6, 5, 3, 2, 4, 7  # asymmetric sizes catch transposed einsums


def make_head(perturb: bool = True, **overrides) -> MoLSimilarity:
    """A small float64 head (one uid component among P_Q = 3), every parameter perturbed off its init.

    The perturbation makes biases non-zero (so the reference checks them) but also makes the gate sharp.
    """
    kwargs = {
        "query_dim": D_Q,
        "item_dim": D_X,
        "num_query_components": P_Q,
        "num_item_components": P_X,
        "component_dim": D_P,
        "query_hidden_dim": 9,
        "uid_hash_sizes": [HASH],
        "gating_query_hidden_dim": 8,
        "gating_item_hidden_dim": 7,
        "gating_qi_hidden_dim": 10,
    }
    kwargs.update(overrides)
    torch.manual_seed(0)
    head = MoLSimilarity(**kwargs)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in head.parameters():
            param.add_(0.3 * torch.randn_like(param) if perturb else 0.0)
    return head.double()


# ------------------------------------------------------------------------------ independent reference
def _silu(x: Tensor) -> Tensor:
    return x / (1.0 + torch.exp(-x))


def _two_layer(seq: nn.Sequential, x: Tensor) -> Tensor:
    """Linear -> SiLU -> Linear written out from the weights (indices 1 and 3 of the gating MLPs)."""
    first, second = seq[1], seq[3]
    hidden = _silu(x @ first.weight.T + first.bias)
    out = hidden @ second.weight.T
    return out if second.bias is None else out + second.bias


def unit(x: Tensor) -> Tensor:
    norm = torch.sqrt((x * x).sum(-1, keepdim=True))
    return x / torch.clamp(norm, min=1e-6)


def reference_scores(head: MoLSimilarity, q: Tensor, x: Tensor, user_ids: Tensor) -> tuple[Tensor, Tensor]:
    """phi (B, X) and pi (B, X, P) of spec §1.1-1.6 in eval mode, from the head's weights, in float64.

    ``x`` is (X, D_x) (shared) or (B, X, D_x) (per query).
    """
    glu, out = head.query_components.net[1], head.query_components.net[2]
    hidden = glu.weight.shape[1] // 2
    pre = q @ glu.weight + glu.bias
    mlp = (_silu(pre[:, :hidden]) * pre[:, hidden:]) @ out.weight.T + out.bias
    n_mlp = P_Q - 1
    uid = head.uid_components.tables[0].weight[user_ids % HASH + 1]  # (B, d_P)
    f = torch.stack([mlp[:, i * D_P : (i + 1) * D_P] for i in range(n_mlp)] + [uid], dim=1)
    f = unit(f)  # (B, P_Q, d_P)
    proj = head.item_components.proj
    flat = x @ proj.weight.T + proj.bias
    g = unit(torch.stack([flat[..., j * D_P : (j + 1) * D_P] for j in range(P_X)], dim=-2))
    shared = x.dim() == 2
    batch, num_items = q.shape[0], g.shape[-3]
    logits = torch.zeros(batch, num_items, P_Q * P_X, dtype=torch.float64)
    for b in range(batch):
        for k in range(num_items):
            item = g[k] if shared else g[b, k]
            for i in range(P_Q):
                for j in range(P_X):
                    logits[b, k, i * P_X + j] = torch.dot(f[b, i], item[j]) / 0.05
    query_part = _two_layer(head.gating.query_part, q)[:, None, :]
    item_part = _two_layer(head.gating.item_part, x)
    if shared:
        item_part = item_part[None]
    combined = query_part * item_part + _two_layer(head.gating.qi_part, logits)
    gate_logits = _silu(combined)
    weights = torch.exp(gate_logits - gate_logits.max(-1, keepdim=True).values)
    weights = weights / weights.sum(-1, keepdim=True)
    return (weights * logits).sum(-1), weights


def make_inputs() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Float64 queries (3, D_q), shared items (5, D_x), per-query items (3, 4, D_x) and user ids (3,)."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, D_Q, generator=g, dtype=torch.float64)
    items = torch.randn(5, D_X, generator=g, dtype=torch.float64)
    per_query = torch.randn(3, 4, D_X, generator=g, dtype=torch.float64)
    user_ids = torch.tensor([2, 9, 30])
    return q, items, per_query, user_ids


@pytest.fixture
def inputs() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return make_inputs()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_eager_compiled_and_bf16_match_reference(inputs, request: pytest.FixtureRequest) -> None:
    q, items, per_query, user_ids = inputs
    head = make_head().eval()
    expected_shared, _ = reference_scores(head, q, items, user_ids)
    expected_pairs, _ = reference_scores(head, q, per_query, user_ids)
    device = torch.device("cuda")
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # earlier tests may have switched TF32 on
    request.addfinalizer(lambda: torch.set_float32_matmul_precision(previous))
    cuda_head = copy.deepcopy(head).float().to(device)
    args = (q.float().to(device),)
    ctx = {"user_ids": user_ids.to(device)}
    for variant in ("eager", "compiled", "bf16"):
        if variant == "bf16":  # a sharp (perturbed) gate can flip pairs on bf16 noise: use the initial head
            head = make_head(perturb=False).eval()
            expected_shared, _ = reference_scores(head, q, items, user_ids)
            expected_pairs, _ = reference_scores(head, q, per_query, user_ids)
            cuda_head = copy.deepcopy(head).float().to(device)
            cuda_head.autocast_bf16 = cuda_head.eval_autocast_bf16 = True  # eval mode: both
        cuda_head._mix_fn = torch.compile(cuda_head._mix) if variant == "compiled" else cuda_head._mix
        tol = {"rtol": 0.02, "atol": 0.5} if variant == "bf16" else {"rtol": 1e-3, "atol": 1e-2}
        shared = cuda_head(*args, items.float().to(device), **ctx).scores.double().cpu()
        pairs = cuda_head(*args, per_query.float().to(device), **ctx).scores.double().cpu()
        for got, expected in ((shared, expected_shared), (pairs, expected_pairs)):
            torch.testing.assert_close(got, expected, **tol)
            assert (got - expected).abs().mean() < (
                0.2 if variant == "bf16" else 1e-3
            )  # bf16: ~1% of |logit| <= 20
