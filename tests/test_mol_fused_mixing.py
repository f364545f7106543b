"""The fused MoL training mixture (``model.similarity.fused_mixing``) against float64 PyTorch references.

Under the Triton CPU interpreter (a subprocess, ``python -m tests.test_mol_fused_mixing``): scores, positive
weights and the gradients of every input, with and without softmax dropout (a given mask, a row with every
weight dropped), for pair counts and hidden widths that need padding and a row count that is not a multiple
of the block. On CPU without the interpreter the option falls back to the PyTorch mixture with a log line;
on CUDA (``gpu``) the fused step equals ``mix_sampled`` in training mode without dropout.
"""

from __future__ import annotations

import logging

import pytest
import torch

from rails.models.similarity import MoLSimilarity
from rails.models.similarity.mol_fused_mixing import (
    FusedSampledMixing,
    choose_sampled_mixing,
    fused_mix_sampled,
)
from rails.models.similarity.mol_sampled import mix_sampled
from tests.triton_interpreter import run_interpreted


def reference(query_gate, item_gate, logits, w1, b1, w2, b2, keep, scale, eps):
    """The PyTorch mixer's math (glu_silu, softmax, dropout with renormalisation), any dtype."""
    hidden = torch.nn.functional.silu(logits @ w1.T + b1)
    gate = torch.nn.functional.silu(query_gate[:, None, :] * item_gate + hidden @ w2.T + b2)
    weights = torch.softmax(gate, dim=-1)
    if keep is None:
        return (weights * logits).sum(-1), weights[:, 0]
    dropped = weights * keep * scale
    total = dropped.sum(-1, keepdim=True).clamp_min(eps)
    return (dropped * logits).sum(-1) / total[..., 0], (dropped / total)[:, 0]


def _inputs(m: int, x: int, p: int, h: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(m, p), (m, x, p), (m, x, p), (h, p), (h,), (p, h), (p,)]
    return [torch.randn(*shape, generator=gen, dtype=torch.float64) for shape in shapes]


def check_against_float64(
    m: int, x: int, p: int, h: int, dropout: float, seed: int = 0, strided_gate: bool = False
) -> None:
    """``strided_gate``: the item gate is a column slice of a wider (M, X, P + 5) tensor, as the sampled step's
    one-gather table hands it over (read in place by its row stride)."""
    inputs = _inputs(m, x, p, h, seed)
    keep, scale = None, 1.0
    if dropout > 0:
        gen = torch.Generator().manual_seed(seed + 1)
        keep = torch.rand(m, x, p, generator=gen) >= dropout
        keep[0, 1] = False  # one row with every weight dropped: the eps floor
        scale = 1.0 / (1.0 - dropout)
    gen = torch.Generator().manual_seed(seed + 2)
    grad_scores = torch.randn(m, x, generator=gen, dtype=torch.float64)
    grad_positive = torch.randn(m, p, generator=gen, dtype=torch.float64)

    ref_in = [t.clone().requires_grad_() for t in inputs]
    ref_scores, ref_positive = reference(*ref_in, keep, scale, 1e-6)
    torch.autograd.backward([ref_scores, ref_positive], [grad_scores, grad_positive])

    fused_in = [t.float().requires_grad_() for t in inputs]
    args = list(fused_in)
    if strided_gate:
        from rails.kernels.mol_mixing_triton import gate_rows

        wide = (
            torch.cat([inputs[1], torch.randn(m, x, 5, dtype=torch.float64)], dim=-1).float().requires_grad_()
        )
        args[1] = wide[..., :p]
        assert gate_rows(args[1]).data_ptr() == wide.data_ptr()  # no copy
    scores, positive = FusedSampledMixing.apply(*args, keep, scale, 1e-6, "ieee")
    torch.autograd.backward([scores, positive], [grad_scores.float(), grad_positive.float()])
    if strided_gate:
        fused_in[1].grad = wide.grad[..., :p]

    torch.testing.assert_close(scores.double(), ref_scores.detach(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(positive.double(), ref_positive.detach(), rtol=1e-4, atol=1e-4)
    names = ["query_gate", "item_gate", "logits", "w1", "b1", "w2", "b2"]
    for name, mine, ref in zip(names, fused_in, ref_in, strict=True):
        scale_of = float(ref.grad.abs().max()) + 1e-12
        err = float((mine.grad.double() - ref.grad).abs().max())
        assert err <= 1e-4 * max(scale_of, 1.0), f"d{name}: max error {err:.3e} (scale {scale_of:.3e})"


def check_backward_variants_agree(
    m: int, x: int, p: int, h: int, dropout: float, seed: int = 0, device: str = "cpu"
) -> None:
    """The ``rows`` backward (weight gradients by matmuls) equals the ``persistent`` one (float64-checked)."""
    from rails.kernels.mol_mixing_triton import MixingInputs, fused_mixing_backward

    inputs = [t.float().to(device) for t in _inputs(m, x, p, h, seed)]
    keep = None
    if dropout > 0:
        keep = (torch.rand(m, x, p, generator=torch.Generator().manual_seed(seed + 1)) >= dropout).to(device)
    mixing = MixingInputs(*inputs, keep, 1.0 / (1.0 - dropout), 1e-6, "ieee")
    gen = torch.Generator().manual_seed(seed + 2)
    grad_scores, grad_positive = torch.randn(m, x, generator=gen), torch.randn(m, p, generator=gen)
    grad_scores, grad_positive = grad_scores.to(device), grad_positive.to(device)
    for positive in (grad_positive, None):
        rows = fused_mixing_backward(mixing, grad_scores, positive, variant="rows")
        persistent = fused_mixing_backward(mixing, grad_scores, positive, variant="persistent")
        for name, mine, ref in zip(["dL", "dA", "dW1", "db1", "dW2", "db2"], rows, persistent, strict=True):
            torch.testing.assert_close(mine, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()), msg=name)


def check_rows_out_of_memory_keeps_the_persistent_kernel() -> None:
    """A chosen ``rows`` backward that runs out of memory gives the persistent result and is replaced."""
    from rails.kernels import mol_mixing_triton as mixing_kernels

    inputs = mixing_kernels.MixingInputs(*[t.float() for t in _inputs(3, 4, 6, 8, 1)], None, 1.0, 1e-6)
    grad_scores = torch.randn(3, 4, generator=torch.Generator().manual_seed(3))
    original = mixing_kernels._backward_rows

    def out_of_memory(*args):
        raise torch.cuda.OutOfMemoryError("no room for the (N, H) rows")

    mixing_kernels._backward_rows = out_of_memory
    try:
        got = mixing_kernels._rows_or_persistent(inputs, grad_scores, None)
    finally:
        mixing_kernels._backward_rows = original
    want = mixing_kernels.fused_mixing_backward(inputs, grad_scores, None, variant="persistent")
    for mine, ref in zip(got, want, strict=True):
        torch.testing.assert_close(mine, ref)
    assert mixing_kernels._CHOSEN[mixing_kernels._variant_key(inputs, None)] == "persistent"


def check_backward_choice_is_timed_once_per_setting() -> None:
    """The CUDA-side choice of backward kernel (timing replaced: the interpreter has no CUDA events)."""
    import triton.testing

    from rails.kernels import mol_mixing_triton as mixing_kernels

    inputs = mixing_kernels.MixingInputs(*[t.float() for t in _inputs(2, 3, 5, 8, 2)], None, 1.0, 1e-6)
    grad_scores = torch.randn(2, 3, generator=torch.Generator().manual_seed(4))
    timed: list[str] = []

    def fake_bench(fn, warmup: int, rep: int) -> float:
        name = fn.__defaults__[0]  # the variant the timed lambda runs
        fn()
        timed.append(name)
        return {"persistent": 2.0, "rows": 1.0}[name]

    original = triton.testing.do_bench
    triton.testing.do_bench = fake_bench
    try:
        first = mixing_kernels._fastest_variant(inputs, grad_scores, None)
        again = mixing_kernels._fastest_variant(inputs, grad_scores, None)
    finally:
        triton.testing.do_bench = original
    assert first == again == "rows" and sorted(timed) == ["persistent", "rows"]  # timed once, both variants


def _interpreter_main() -> None:
    torch.set_num_threads(1)
    check_backward_choice_is_timed_once_per_setting()
    check_rows_out_of_memory_keeps_the_persistent_kernel()
    check_backward_variants_agree(m=7, x=5, p=6, h=24, dropout=0.0)
    check_backward_variants_agree(m=3, x=40, p=32, h=40, dropout=0.2, seed=5)  # several blocks
    check_against_float64(m=7, x=5, p=6, h=24, dropout=0.0)  # P -> 16, H -> 32, 35 rows: one partial block
    check_against_float64(m=7, x=5, p=6, h=24, dropout=0.3, seed=3)
    check_against_float64(m=7, x=5, p=6, h=24, dropout=0.3, seed=4, strided_gate=True)
    check_against_float64(
        m=3, x=40, p=32, h=40, dropout=0.2, seed=5
    )  # several blocks, two programs' partials
    check_training_step_equals_pytorch()
    check_training_step_equals_pytorch(checkpoint_columns=4)
    check_training_step_with_softmax_dropout()
    print("FUSED MIXING OK")


def check_training_step_with_softmax_dropout() -> None:
    """The drawn-mask path: finite scores and gradients, positive weights summing to 1 (renormalised)."""
    head = tiny_head(fused_mixing=True, softmax_dropout=0.5).train()
    gen = torch.Generator().manual_seed(4)
    queries, table = torch.randn(9, 12, generator=gen), torch.randn(20, 10, generator=gen)
    out = head.forward_sampled(queries, table, torch.randint(0, 20, (9, 6), generator=gen))
    (out.scores.sum() + out.aux_losses["mi_loss"]).backward()
    assert torch.isfinite(out.scores).all() and torch.isfinite(out.aux_losses["mi_loss"])
    assert all(q.grad is None or torch.isfinite(q.grad).all() for q in head.parameters())
    assert head.gating.qi_part[1].weight.grad is not None


def check_training_step_equals_pytorch(checkpoint_columns: int = 0) -> None:
    """forward_sampled with fused_mixing=True == the PyTorch head (same weights, no dropout): scores, mi_loss, grads
    (``checkpoint_columns``: the fused head scores that many columns at a time under activation checkpointing)."""
    fused = tiny_head(
        fused_mixing=True, softmax_dropout=0.0, sampled_checkpoint_columns=checkpoint_columns
    ).train()
    plain = tiny_head(softmax_dropout=0.0).train()
    plain.load_state_dict(fused.state_dict())
    gen = torch.Generator().manual_seed(0)
    queries, table = torch.randn(9, 12, generator=gen), torch.randn(20, 10, generator=gen)
    positions = torch.randint(0, 20, (9, 6), generator=gen)
    outputs = []
    for head in (fused, plain):
        torch.manual_seed(1)  # the same item / query dropout draws (the fused path draws nothing more here)
        out = head.forward_sampled(queries, table, positions)
        (out.scores.square().sum() + out.aux_losses["mi_loss"]).backward()
        outputs.append(
            (out.scores, out.aux_losses["mi_loss"], {n: q.grad for n, q in head.named_parameters()})
        )
    (scores, mi, grads), (ref_scores, ref_mi, ref_grads) = outputs
    torch.testing.assert_close(scores, ref_scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mi, ref_mi, rtol=1e-4, atol=1e-6)
    for name, grad in grads.items():
        if ref_grads[name] is None:
            assert grad is None, name
            continue
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-3, atol=1e-5, msg=name)


def test_fused_mixing_matches_float64_under_the_triton_interpreter() -> None:
    run_interpreted("tests.test_mol_fused_mixing", "FUSED MIXING OK", timeout=900)


def tiny_head(**kwargs) -> MoLSimilarity:
    torch.manual_seed(0)
    return MoLSimilarity(
        query_dim=12, item_dim=10, num_query_components=3, num_item_components=2, component_dim=8,
        query_hidden_dim=16, gating_query_hidden_dim=8, gating_item_hidden_dim=8, gating_qi_hidden_dim=8,
        **kwargs,
    )  # fmt: skip


def test_on_cpu_without_the_interpreter_the_pytorch_mixture_runs_and_says_so(caplog) -> None:
    head = tiny_head(fused_mixing=True).eval()
    m, x, p = 4, 6, 6
    gen = torch.Generator().manual_seed(0)
    query_gate, item_gate, logits = (torch.randn(*s, generator=gen) for s in [(m, p), (m, x, p), (m, x, p)])
    with caplog.at_level(logging.INFO, logger="rails"):
        scores, positive = fused_mix_sampled(head, query_gate, item_gate, logits)
    ref_scores, ref_positive = mix_sampled(head, query_gate, item_gate, logits)
    assert torch.equal(scores, ref_scores) and torch.equal(positive, ref_positive)
    assert "fused MoL mixing not used (tensors on cpu, not CUDA)" in caplog.text
    with pytest.raises(ValueError, match="fused_mixing and compile_mixing are both true"):
        choose_sampled_mixing(True, True)
    assert choose_sampled_mixing(False, True) is fused_mix_sampled
    assert choose_sampled_mixing(False, False) is mix_sampled


def test_an_unknown_backward_variant_is_named() -> None:
    pytest.importorskip("triton")
    from rails.kernels.mol_mixing_triton import MixingInputs, fused_mixing_backward

    inputs = MixingInputs(*[t.float() for t in _inputs(2, 3, 4, 8, 0)], None, 1.0, 1e-6)
    with pytest.raises(ValueError, match="backward variant must be one of .*'persistent', 'rows'.*'tiles'"):
        fused_mixing_backward(inputs, torch.zeros(2, 3), None, variant="tiles")


def test_the_tuned_backward_names_real_kernel_arguments() -> None:
    """The autotuner's keys, reset arguments and config parameters are the kernel's own (checked on CPU: the
    tuned launch itself runs on CUDA only)."""
    pytest.importorskip("triton")
    from rails.kernels.mol_mixing_kernel import mol_mixing_bwd_kernel
    from rails.kernels.mol_mixing_triton import BACKWARD_CONFIGS, _tuned_backward

    tuned = _tuned_backward()
    names = set(mol_mixing_bwd_kernel.arg_names)
    assert set(tuned.keys) <= names and {"DW1", "DB1", "DW2", "DB2"} <= names
    assert list(tuned.configs) == list(BACKWARD_CONFIGS)
    assert all(set(config.kwargs) <= names for config in BACKWARD_CONFIGS)
    first = BACKWARD_CONFIGS[0]
    assert (first.kwargs["BN"], first.kwargs["PER_SM"], first.num_warps) == (64, 4, 8)  # round 8's setting


def test_unsupported_gating_falls_back() -> None:
    from rails.models.similarity.mol_fused_mixing import fused_unsupported

    logits = torch.zeros(2, 3, 6)
    assert "glu_silu_ln" in (fused_unsupported(tiny_head(gating_combination="glu_silu_ln"), logits) or "")
    head = tiny_head(gating_qi_dropout=0.1).train()
    assert "input dropout" in (fused_unsupported(head, logits) or "")
    assert fused_unsupported(head.eval(), logits) == "tensors on cpu, not CUDA"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_mixing_equals_mix_sampled_on_cuda() -> None:
    previous = torch.backends.cuda.matmul.allow_tf32  # both sides in full fp32, restored after
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        _compare_fused_with_mix_sampled_on_cuda()
        check_backward_variants_agree(m=300, x=129, p=32, h=128, dropout=0.2, seed=7, device="cuda")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def _compare_fused_with_mix_sampled_on_cuda() -> None:
    torch.manual_seed(0)
    head = MoLSimilarity(
        query_dim=50, item_dim=50, num_query_components=8, num_item_components=4, component_dim=64,
        softmax_dropout=0.0, fused_mixing=True,
    ).cuda().train()  # fmt: skip
    m, x, p = 300, 129, 32
    inputs = [torch.randn(*s, device="cuda") for s in [(m, p), (m, x, p), (m, x, p)]]
    grads = [torch.randn(m, x, device="cuda"), torch.randn(m, 1, p, device="cuda")]
    results = []
    for fn in (fused_mix_sampled, mix_sampled):
        head.zero_grad()
        leaves = [t.clone().requires_grad_() for t in inputs]
        outputs = fn(head, *leaves)
        torch.autograd.backward(list(outputs), grads)
        weight_grads = [q.grad.clone() for q in head.gating.qi_part.parameters()]
        results.append([*outputs, *(t.grad for t in leaves), *weight_grads])
    for mine, ref in zip(*results, strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()) + 1e-6)


if __name__ == "__main__":
    _interpreter_main()
