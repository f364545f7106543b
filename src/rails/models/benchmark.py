"""Training-step benchmarks of the models (``scripts/bench_mol_step.py``, ``scripts/bench_hstu.py``).

Shared pieces: random histories of ML-1M-like shapes (:func:`random_batch`), synchronised step timing with
peak memory (:func:`time_steps`), the paper's HSTU-large (:func:`hstu_large`). Here also the MoL vs
dot-product training step (:func:`bench_head_step`; op counts per phase :func:`count_step_ops`; its JSON and
markdown are :mod:`rails.models.benchmark_report`): one step = encoder forward over
every history position, one head call over [positive | R negatives], sampled-softmax loss + weighted aux
losses, backward, AdamW (``RetrievalModule.training_loss``, no Lightning/Hydra). The HSTU
attention benchmark is :mod:`rails.models.benchmark_hstu`.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rails.batch import SequenceBatch
from rails.models.encoders.hstu import HSTU
from rails.models.losses import SampledSoftmaxLoss, UniformNegatives
from rails.models.retrieval_module import RetrievalModule
from rails.models.similarity import DotProductSimilarity, MoLSimilarity
from rails.models.step_profile import count_step_ops, profile_step_kernels

HEADS = ("dot", "mol", "mol_compiled", "mol_compiled_head", "mol_bf16_head", "mol_fused", "mol_dot_loss")
# "eager": the presets' step; "compiled": the encoder under torch.compile (model.compile_encoder=true), the MoL
# mixing too (model.similarity.compile_mixing=true) and AdamW's fused kernels (model.optimizer.fused=true), the
# launch-count levers of a launch-bound step;
# "graphs": the same with the encoder in CUDA graphs (model.compile_mode=reduce-overhead);
# "captured": the eager step (forward, backward, AdamW with capturable=True) recorded whole in one CUDA graph and
# replayed: the step with no launch overhead at all, what a graph-captured training loop could reach (CUDA only;
# the benchmark's one fixed batch gives the static shapes a capture needs, a training loop would bucket them).
STEP_VARIANTS = ("eager", "compiled", "graphs", "captured")


def random_batch(
    lengths: torch.Tensor, seq_len: int, num_items: int, device: torch.device, seed: int = 0
) -> SequenceBatch:
    """Random right-padded histories: ids in [1, num_items), increasing timestamps, the given lengths.

    Args:
        lengths: (B,) int64 valid positions per history (<= seq_len).
        seq_len: N.
        num_items: item ids are drawn below it.
        device: where the batch goes.
        seed: generator seed.
    """
    g = torch.Generator().manual_seed(seed)
    b = lengths.shape[0]
    valid = torch.arange(seq_len)[None, :] < lengths[:, None]
    times = 978_300_000 + torch.randint(1, 100_000, (b, seq_len + 1), generator=g).cumsum(1)
    return SequenceBatch(
        user_ids=torch.arange(1, b + 1),
        history_ids=torch.randint(1, num_items, (b, seq_len), generator=g) * valid,
        history_timestamps=times[:, :seq_len] * valid,
        history_ratings=valid.float() * 4,
        lengths=lengths,
        target_ids=torch.randint(1, num_items, (b,), generator=g),
        target_timestamps=times[torch.arange(b), lengths],
        target_ratings=torch.full((b,), 4.0),
    ).to(device)


@dataclass(frozen=True)
class Timing:
    """Milliseconds per step (mean, sample std over the timed steps) and peak allocated GiB (NaN on CPU)."""

    mean_ms: float
    std_ms: float
    peak_gib: float


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> Timing:
    """Run ``warmup`` untimed steps, then time ``steps`` synchronised steps one by one."""
    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan
    return Timing(statistics.fmean(times), statistics.stdev(times) if len(times) > 1 else 0.0, peak)


def capture_step(
    step: Callable[[], None], optimizer: torch.optim.Optimizer, device: torch.device
) -> Callable[[], None]:
    """``step`` (zero_grad, forward, backward, optimizer step) recorded in one CUDA graph; returns its replay.

    Three eager runs on a side stream first (autotuning, lazy state, allocator warm-up), then the capture with
    the gradients set to None, so that the recorded backward writes them (each replay overwrites them). A
    host synchronisation inside the step makes the capture fail with PyTorch's error.
    """
    if device.type != "cuda":
        raise ValueError(
            f"the 'captured' step variant records a CUDA graph: it needs a CUDA device, not {device}"
        )
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    optimizer.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def hstu_large(max_seq_len: int, tiny: bool = False, **kwargs: Any) -> HSTU:
    """RAILS HSTU-large ML-1M sizes (D 50, 8 blocks, 2 heads, d_qk = d_v = 25), or a 2-block toy (D 16)."""
    if tiny:
        return HSTU(dim=16, max_seq_len=max_seq_len, num_blocks=2, num_heads=2, qk_dim=8, v_dim=8, **kwargs)
    return HSTU(dim=50, max_seq_len=max_seq_len, num_blocks=8, num_heads=2, qk_dim=25, v_dim=25, **kwargs)


@dataclass(frozen=True)
class Shapes:
    """Sizes of the MoL vs dot training-step benchmark."""

    batch: int
    seq_len: int
    negatives: int
    dim: int
    num_items: int
    blocks: int
    heads: int
    head_dim: int
    mol: tuple[int, int, int]  # P_Q, P_X, d_P
    mol_hidden: int  # query MLP width
    gating_hidden: int


FULL = Shapes(128, 200, 128, 50, 3707, 8, 2, 25, (8, 4, 64), 512, 128)
TINY = Shapes(4, 12, 8, 16, 50, 2, 1, 8, (4, 2, 8), 16, 8)


def head_step_module(
    shapes: Shapes, head: str, device: torch.device, variant: str = "eager"
) -> RetrievalModule:
    """HSTU-large + the requested head, paper settings for each.

    Heads: ``dot``, ``mol``, ``mol_compiled`` (torch.compile'd mixing), ``mol_compiled_head`` (the whole
    sampled head call, query and item sides, logits, mixture and auxiliary losses, under one ``torch.compile``
    with dynamic shapes: a benchmark-only probe of how many of the MoL step's launches fusion removes; no config
    option yet), ``mol_bf16_head`` (the MoL head under
    bf16 autocast in an fp32 step: ``model.similarity.autocast_bf16=true``, the Amazon Books recipe),
    ``mol_fused`` (the training mixture in fused Triton kernels: ``model.similarity.fused_mixing=true``),
    ``mol_dot_loss`` (MoL with the dot head's loss beside it: ``model.dot_loss_weight=1.0``, the Beauty recipe).

    ``variant="compiled"`` compiles the encoder and uses fused AdamW, ``"graphs"`` also puts the encoder in
    CUDA graphs (see ``STEP_VARIANTS``).
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {list(HEADS)}, got {head!r}")
    if variant not in STEP_VARIANTS:
        raise ValueError(f"variant must be one of {list(STEP_VARIANTS)}, got {variant!r}")
    compiled = variant in ("compiled", "graphs")
    mol = head.startswith("mol")
    encoder = HSTU(
        dim=shapes.dim,
        max_seq_len=shapes.seq_len,
        num_blocks=shapes.blocks,
        num_heads=shapes.heads,
        qk_dim=shapes.head_dim,
        v_dim=shapes.head_dim,
        output_norm="layer_norm" if mol else "l2",
    )
    if mol:
        p_q, p_x, d_p = shapes.mol
        similarity: DotProductSimilarity | MoLSimilarity = MoLSimilarity(
            query_dim=shapes.dim,
            item_dim=shapes.dim,
            num_query_components=p_q,
            num_item_components=p_x,
            component_dim=d_p,
            query_hidden_dim=shapes.mol_hidden,
            uid_hash_sizes=[6040],
            gating_query_hidden_dim=shapes.gating_hidden,
            gating_item_hidden_dim=shapes.gating_hidden,
            gating_qi_hidden_dim=shapes.gating_hidden,
            compile_mixing=(head == "mol_compiled" or compiled) and head != "mol_fused",
            autocast_bf16=head == "mol_bf16_head",
            fused_mixing=head == "mol_fused",
        )
        weights = {"mi_loss": 1e-3, "uid_embedding_l2_norm": 0.1}
        if head == "mol_compiled_head":
            similarity.forward_sampled = torch.compile(similarity.forward_sampled, dynamic=True)  # type: ignore[method-assign]
    else:
        similarity, weights = DotProductSimilarity(), {}
    module = RetrievalModule(
        encoder,
        similarity,
        SampledSoftmaxLoss(temperature=1.0 if mol else 0.05),
        UniformNegatives(shapes.negatives),
        optimizer=functools.partial(
            torch.optim.AdamW,
            lr=1e-3,
            betas=(0.9, 0.98),
            weight_decay=1e-3,
            fused=True if compiled else None,
            capturable=variant == "captured",
        ),
        num_items=shapes.num_items,
        item_dim=shapes.dim,
        aux_loss_weights=weights,
        compile_encoder=compiled,
        compile_mode="reduce-overhead" if variant == "graphs" else None,
        dot_loss_weight=1.0 if head == "mol_dot_loss" else 0.0,
    ).to(device)
    module.set_corpus(torch.arange(1, shapes.num_items, device=device))
    return module.train()


def bench_head_step(
    shapes: Shapes,
    head: str,
    precision: str,
    device: torch.device,
    warmup: int,
    iters: int,
    full_length: bool = False,
    count_ops: bool = False,
    variant: str = "eager",
    profile_kernels: bool = False,
) -> dict[str, Any]:
    """Time one training step of HSTU-large + ``head`` in ``precision`` (``fp32`` or ``bf16`` autocast).

    ``variant`` is one of ``STEP_VARIANTS`` (``compiled``: the warm-up steps also pay the compilation).

    History lengths are uniform in [min(20, N), N] (all N with ``full_length``). With ``count_ops`` the
    row also has :func:`count_step_ops` of one extra step (after the timed ones), with ``profile_kernels``
    a ``profile`` (:func:`profile_step_kernels` of five more).

    Returns:
        ``head``, ``precision``, ``variant``, ``mean_ms``, ``std_ms``, ``peak_gib``, ``M`` (supervised
        positions) and, with ``count_ops``, ``forward_ops``, ``backward_ops``, ``optimizer_ops``.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    torch.manual_seed(0)
    module = head_step_module(shapes, head, device, variant)
    optimizer = module.configure_optimizers()
    n = shapes.seq_len
    g = torch.Generator().manual_seed(0)
    lengths = (
        torch.full((shapes.batch,), n)
        if full_length
        else torch.randint(min(20, n), n + 1, (shapes.batch,), generator=g)
    )
    batch = random_batch(lengths, n, shapes.num_items, device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        with torch.profiler.record_function("forward"), autocast:
            total, _ = module.training_loss(batch)
        with torch.profiler.record_function("backward"):
            total.backward()
        with torch.profiler.record_function("optimizer"):
            optimizer.step()

    if variant == "captured":
        step = capture_step(step, optimizer, device)
    timing = time_steps(step, device, warmup, iters)
    row = {
        "head": head,
        "precision": precision,
        "variant": variant,
        "mean_ms": timing.mean_ms,
        "std_ms": timing.std_ms,
        "peak_gib": timing.peak_gib,
        "M": int(batch.lengths.sum()),
    }
    if count_ops:
        row.update(count_step_ops(step))
    if profile_kernels:
        row["profile"] = profile_step_kernels(step, device, top=60)  # the page shows the first few
    return row
