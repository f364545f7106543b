"""The sampled-softmax MoL mixture through the fused Triton kernels (``model.similarity.fused_mixing=true``).

:func:`fused_mix_sampled` has the contract of :func:`rails.models.similarity.mol_sampled.mix_sampled` (scores
(M, X) and the positive column's weights (M, 1, P)) and computes the same function: the query-item gating
MLP, ``glu_silu`` combination, softmax, training softmax dropout with renormalisation, mixture, in one
forward kernel and one backward kernel (on CUDA the faster of two, chosen at the first step and logged;
:mod:`rails.kernels.mol_mixing_triton`). The dropout mask is drawn here
(a Bernoulli(1 - p) byte per weight, kept weights scaled by 1 / (1 - p), as ``nn.Dropout``), so the fused step is equal in
distribution to the PyTorch one.

It falls back to the PyTorch mixture, with one log line saying why, where the kernels do not apply: another
gating combination, a query-item input dropout in training, tensors off CUDA (unless ``TRITON_INTERPRET=1``,
the CPU interpreter the tests use) or no Triton.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from rails.log import get_logger
from rails.models.similarity.mol_sampled import mix_sampled

if TYPE_CHECKING:
    from rails.models.similarity.mol import MoLSimilarity

log = get_logger(__name__)
_logged: set[str] = set()


class FusedSampledMixing(torch.autograd.Function):
    """Autograd of the fused mixture: inputs (query_gate, item_gate, logits, w1, b1, w2, b2) get gradients."""

    @staticmethod
    def forward(ctx: Any, *args: Any) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """``args``: the fields of :class:`rails.kernels.mol_mixing_triton.MixingInputs`, in order."""
        from rails.kernels.mol_mixing_triton import MixingInputs, fused_mixing_forward

        inputs = MixingInputs(*args)
        ctx.save_for_backward(*inputs[:8])
        ctx.settings = inputs[8:]
        return fused_mixing_forward(inputs)

    @staticmethod
    def backward(ctx: Any, grad_scores: Tensor, grad_positive: Tensor | None) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        from rails.kernels.mol_mixing_triton import MixingInputs, fused_mixing_backward

        inputs = MixingInputs(*ctx.saved_tensors, *ctx.settings)
        dlogits, dgate, dw1, db1, dw2, db2 = fused_mixing_backward(inputs, grad_scores, grad_positive)
        dquery = (dgate * inputs.item_gate.float()).sum(dim=1)  # a = q_gate * i_gate + qi
        ditem = dgate * inputs.query_gate.float()[:, None, :]
        grads = (dquery, ditem, dlogits, dw1, db1, dw2, db2)
        return (*(g.to(t.dtype) for g, t in zip(grads, inputs[:7], strict=True)), None, None, None, None)


def _log_once(reason: str) -> None:
    if reason not in _logged:
        _logged.add(reason)
        log.info(f"fused MoL mixing not used ({reason}): the PyTorch mixture runs")


def fused_unsupported(head: MoLSimilarity, logits: Tensor) -> str | None:
    """Why the fused kernels cannot run this mixture, or None."""
    gating = head.gating
    if gating.combination != "glu_silu":
        return f"gating combination {gating.combination!r}; only 'glu_silu' is fused"
    if gating.training and gating.qi_part[0].p > 0:
        return "query-item gating input dropout > 0 in training"
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed"
    if not logits.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        return f"tensors on {logits.device.type}, not CUDA"
    return None


def fused_mix_sampled(
    head: MoLSimilarity, query_gate: Tensor, item_gate: Tensor, logits: Tensor
) -> tuple[Tensor, Tensor]:
    """Scores (M, X) and the positive column's weights (M, 1, P), as ``mix_sampled``, fused where it can."""
    reason = fused_unsupported(head, logits)
    if reason is not None:
        _log_once(reason)
        return mix_sampled(head, query_gate, item_gate, logits)
    hidden, out = head.gating.qi_part[1], head.gating.qi_part[3]
    mixer = head.mixer
    keep, scale = None, 1.0
    if mixer.training and mixer.dropout.p > 0:
        keep = torch.empty(logits.shape, device=logits.device, dtype=torch.uint8).bernoulli_(
            1 - mixer.dropout.p
        )
        scale = 1.0 / (1.0 - mixer.dropout.p)
    tf32 = logits.is_cuda and torch.backends.cuda.matmul.allow_tf32
    scores, positive = FusedSampledMixing.apply(
        query_gate, item_gate.expand_as(logits), logits, hidden.weight, hidden.bias, out.weight, out.bias,
        keep, scale, mixer.eps, "tf32" if tf32 else "ieee",
    )  # fmt: skip
    return scores.to(logits.dtype), positive[:, None, :]


SampledMixFn = Callable[["MoLSimilarity", Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


def mixing_conflict(args: Mapping[str, Any]) -> bool:
    """True when a MoL config asks for both ``compile_mixing`` and ``fused_mixing``."""
    return bool(args.get("compile_mixing")) and bool(args.get("fused_mixing"))


def choose_sampled_mixing(compile_mixing: bool, fused_mixing: bool) -> SampledMixFn:
    """The sampled mixture of a MoL head: fused kernels, ``torch.compile``'d PyTorch, or plain PyTorch."""
    if compile_mixing and fused_mixing:
        raise ValueError("model.similarity.fused_mixing and compile_mixing are both true: choose one")
    if fused_mixing:
        return fused_mix_sampled
    return torch.compile(mix_sampled) if compile_mixing else mix_sampled
