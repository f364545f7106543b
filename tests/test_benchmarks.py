"""The training-step benchmark library (rails.models.benchmark, rails.models.benchmark_hstu) on CPU, tiny shapes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.autograd import DeviceType
from torch.autograd.profiler_util import FunctionEvent, FunctionEventAvg

from rails.models.benchmark import (
    TINY,
    bench_head_step,
    head_step_module,
    random_batch,
    time_steps,
)
from rails.models.benchmark_hstu import (
    Budget,
    HSTUBench,
    batch_sizes,
    bench_epoch,
    bench_lengths,
    write_report,
)
from rails.models.benchmark_report import head_step_markdown, head_step_report
from rails.models.step_profile import drop_annotations, kernel_table, profile_step_kernels

CPU = torch.device("cpu")


def test_random_batch_is_valid_and_seeded() -> None:
    lengths = torch.tensor([3, 5, 1])
    batch = random_batch(lengths, 5, 10, CPU, seed=4)
    assert batch.history_ids.shape == (3, 5) and torch.equal(batch.lengths, lengths)
    assert ((batch.history_ids > 0) == batch.valid_mask).all() and (batch.history_ids < 10).all()
    assert (batch.target_ids >= 1).all() and (
        batch.target_timestamps > batch.history_timestamps.max(1).values
    ).all()
    assert torch.equal(random_batch(lengths, 5, 10, CPU, seed=4).history_ids, batch.history_ids)


def test_time_steps_counts_every_timed_step() -> None:
    calls = []
    timing = time_steps(lambda: calls.append(1), CPU, warmup=2, steps=3)
    assert len(calls) == 5 and timing.mean_ms >= 0 and timing.std_ms >= 0 and math.isnan(timing.peak_gib)


def test_the_dot_loss_head_trains_the_mol_step_with_the_auxiliary_dot_loss() -> None:
    module = head_step_module(TINY, "mol_dot_loss", CPU)
    assert module.dot_loss_weight == 1.0 and head_step_module(TINY, "mol", CPU).dot_loss_weight == 0.0
    row = bench_head_step(TINY, "mol_dot_loss", "fp32", CPU, warmup=0, iters=1, count_ops=True)
    plain = bench_head_step(TINY, "mol", "fp32", CPU, warmup=0, iters=1, count_ops=True)
    assert row["forward_ops"] > plain["forward_ops"]  # the dot loss's cosine logits and softmax run too


def test_head_step_rows_and_report() -> None:
    rows = [
        bench_head_step(TINY, head, "fp32", CPU, warmup=0, iters=2, count_ops=True) for head in ("dot", "mol")
    ]
    assert [r["head"] for r in rows] == ["dot", "mol"] and all(r["mean_ms"] > 0 for r in rows)
    assert rows[0]["M"] == rows[1]["M"] > 0  # same batch for both heads
    assert rows[1]["forward_ops"] > rows[0]["forward_ops"] > 0 and rows[0]["backward_ops"] > 0
    meta = {"device_name": "cpu", "command": "python scripts/bench_mol_step.py --tiny", "commit": None}
    report = head_step_report(rows, TINY, **meta, warmup=0, iters=2, full_length=False, tiny=True)
    text = head_step_markdown(json.loads(json.dumps(report)))  # rendered from the JSON alone
    assert "| dot | fp32 |" in text and "| mol | fp32 |" in text and "1.00" in text
    assert "not measured: CPU or tiny" in text
    gpu = {**report, "device_name": "NVIDIA H200", "tiny": False}
    gpu["rows"] = [{**rows[0], "mean_ms": 10.0}, {**rows[1], "mean_ms": 14.0}]
    assert ": met by mol fp32 eager (MoL / the fastest dot step, 10.00 ms: mol fp32 eager 1.4)" in (
        head_step_markdown(gpu)
    )
    gpu["rows"][1]["mean_ms"] = 16.0
    assert ": not met (MoL / the fastest dot step, 10.00 ms: mol fp32 eager 1.6)" in head_step_markdown(gpu)
    gpu["rows"].append({**rows[1], "head": "mol_bf16_head", "mean_ms": 13.0})
    assert (
        ": met by mol_bf16_head fp32 eager (MoL / the fastest dot step, 10.00 ms: mol fp32 eager 1.6, "
        in (head_step_markdown(gpu))
    )
    slow_dot = {**gpu, "rows": [*gpu["rows"], {**rows[0], "precision": "bf16", "mean_ms": 30.0}]}
    slow_dot["rows"].append({**rows[1], "precision": "bf16", "mean_ms": 33.0})  # 1.1x its own precision's dot
    assert "mol bf16 eager 3.3)" in head_step_markdown(slow_dot)  # but 3.3x the fastest dot step
    profiled = bench_head_step(TINY, "mol", "fp32", CPU, 0, 1, profile_kernels=True)["profile"]
    assert profiled["steps"] == 5 and profiled["busy_ms"] > 0 and profiled["launches"] > 0
    assert 0 < len(profiled["top"]) <= 60 and all(k["name"].startswith("aten::") for k in profiled["top"])
    assert profiled["top"][0]["ms"] >= profiled["top"][-1]["ms"]
    with_profile = {**report, "rows": [{**rows[1], "profile": profiled}]}
    text = head_step_markdown(json.loads(json.dumps(with_profile)))
    assert "mol / fp32 / eager: busy" in text and f"| `{profiled['top'][0]['name'][:90]}` |" in text
    assert sum(line.startswith("| `") for line in text.splitlines()) == min(8, len(profiled["top"]))
    pending = head_step_markdown({**report, "rows": [], "note": "old rows removed"})
    assert "old rows removed" in pending and "No measurement of the current code" in pending
    with pytest.raises(ValueError, match="head must be one of"):
        bench_head_step(TINY, "cosine", "fp32", CPU, 0, 1)


def test_compiled_step_variant_and_its_speedup_column() -> None:
    module = head_step_module(TINY, "dot", CPU, "compiled")  # torch.compile is lazy: nothing compiles here
    assert module.encoder._compiled_call_impl is not None  # nn.Module.compile(): compiled in place
    assert module.configure_optimizers().defaults["fused"] is True
    eager = head_step_module(TINY, "dot", CPU)
    assert eager.encoder._compiled_call_impl is None
    assert eager.configure_optimizers().defaults["fused"] is None
    assert list(module.state_dict()) == list(eager.state_dict())  # checkpoints do not depend on compiling
    graphs = head_step_module(TINY, "dot", CPU, "graphs")
    assert graphs.encoder._compiled_call_impl is not None and graphs.hparams.compile_mode == "reduce-overhead"
    with pytest.raises(ValueError, match="variant must be one of"):
        head_step_module(TINY, "dot", CPU, "jit")
    row = {"precision": "fp32", "M": 10, "std_ms": 0.0, "peak_gib": float("nan")}
    rows = [
        {**row, "head": "dot", "mean_ms": 30.0},  # written before variants: eager
        {**row, "head": "mol", "mean_ms": 40.0, "variant": "eager"},
        {**row, "head": "dot", "mean_ms": 10.0, "variant": "compiled"},
        {**row, "head": "mol", "mean_ms": 14.0, "variant": "compiled"},
    ]
    meta = {"device_name": "NVIDIA H200", "command": "c", "commit": None}
    text = head_step_markdown(
        json.loads(
            json.dumps(head_step_report(rows, TINY, **meta, warmup=0, iters=1, full_length=False, tiny=False))
        )
    )
    assert "| dot | fp32 | compiled | 10 | 10.00 ± 0.00 | 1.00 | 3.00 |" in text  # 30 ms eager / 10 ms
    assert "| mol | fp32 | compiled | 10 | 14.00 ± 0.00 | 1.40 | 2.86 |" in text
    assert "| mol | fp32 | eager | 10 | 40.00 ± 0.00 | 1.33 | 1.00 |" in text
    failed = {"head": "mol", "precision": "bf16", "variant": "compiled", "error": "BackendCompilerFailed: x"}
    report = head_step_report([*rows, failed], TINY, **meta, warmup=0, iters=1, full_length=False, tiny=False)
    text = head_step_markdown(json.loads(json.dumps(report)))
    assert "- mol / bf16 / compiled: BackendCompilerFailed: x" in text
    verdict = "met by mol fp32 compiled (MoL / the fastest dot step, 10.00 ms: mol fp32 eager 4.0, mol fp32 compiled 1.4)"
    assert verdict in text


def test_hstu_lengths_epoch_and_report(tmp_path: Path) -> None:
    assert batch_sizes([200, 1024, 8], 64, None, tiny=False) == [655, 128, 8]
    assert batch_sizes([16, 32], 64, None, tiny=True) == [4, 2]
    with pytest.raises(ValueError, match="one value per length"):
        batch_sizes([16, 32], 64, [1], tiny=True)
    bench = HSTUBench([8], [2], steps=1, warmup=0, precision="32-true", tiny=True)
    rows = bench_lengths(bench, CPU, ["torch"], Budget(60.0))
    assert rows[0]["seq_len"] == 8 and rows[0]["torch_ms"] > 0
    skipped = bench_lengths(bench, CPU, ["torch"], Budget(-1.0))
    assert skipped[0]["torch_ms"] == "skipped (time budget)"
    epoch = bench_epoch(bench, CPU, ["torch"], Budget(60.0))
    assert epoch[0]["steps"] == 4 and epoch[0]["epoch_s"] > 0
    meta = {"device_name": "cpu", "date": "d", "torch": "t", "precision": "32-true", "model": "tiny"}
    write_report(tmp_path / "bench", {**meta, "timed_steps": 1, "warmup_steps": 0}, rows, epoch)
    assert json.loads((tmp_path / "bench.json").read_text())["steps"][0]["seq_len"] == 8
    assert (
        "| 8 | 2 |" in (tmp_path / "bench.md").read_text()
        and "| torch | 64 | 16 | 4 |" in (tmp_path / "bench.md").read_text()
    )


def _cuda_row(name: str, us: list[int], annotation: bool | None) -> FunctionEventAvg:
    """A ``key_averages()`` row of CUDA activity: one event per duration (µs)."""
    row = FunctionEventAvg()
    for i, duration in enumerate(us):
        event = FunctionEvent(
            id=i, name=name, thread=0, start_us=0, end_us=duration, use_device="cuda",
            device_type=DeviceType.CUDA, is_user_annotation=bool(annotation),
        )  # fmt: skip
        row.add(event)
    row.is_user_annotation = annotation  # None: a profiler without the flag
    return row


def test_kernel_table_sums_kernels_not_user_annotations() -> None:
    """The device-side copies of record_function ranges (the step's forward, AdamW's step) are no kernels."""
    for flag in (True, None):  # the profiler's flag; without it (older torch) the range names
        rows = [
            _cuda_row("forward", [7_500], flag),  # spans the forward's kernels: counted twice before
            _cuda_row("Optimizer.step#AdamW.step", [700], flag),
            _cuda_row("void gemm_kernel<float>()", [2_000, 1_000], False if flag else None),
            _cuda_row("Memcpy HtoD (Pageable -> Device)", [500], False if flag else None),
        ]
        table = kernel_table(rows, cuda=True, steps=1, top=10)
        assert [k["name"] for k in table["top"]] == [
            "void gemm_kernel<float>()",
            "Memcpy HtoD (Pageable -> Device)",
        ]
        assert table["busy_ms"] == pytest.approx(3.5) and table["launches"] == 3
        assert table["top"][0] == {"name": "void gemm_kernel<float>()", "calls": 2, "ms": pytest.approx(3.0)}
    assert kernel_table(rows, cuda=True, steps=5, top=1)["top"] == [
        {"name": "void gemm_kernel<float>()", "calls": 0.4, "ms": pytest.approx(0.6)}
    ]


def test_profile_step_kernels_lists_no_record_function_range() -> None:
    x = torch.randn(32, 32, requires_grad=True)
    optimizer = torch.optim.AdamW([x])

    def step() -> None:
        with torch.profiler.record_function("forward"):
            loss = (x @ x).relu().sum()
        with torch.profiler.record_function("backward"):
            loss.backward()
        optimizer.step()  # opens "Optimizer.step#AdamW.step"

    profile = profile_step_kernels(step, CPU, steps=2, top=50)
    names = [k["name"] for k in profile["top"]]
    assert "aten::mm" in names and all(name.startswith("aten::") for name in names)
    assert not {"forward", "backward"} & set(names) and not any(n.startswith("Optimizer.") for n in names)
    assert profile["busy_ms"] == pytest.approx(sum(k["ms"] for k in profile["top"]))


def test_drop_annotations_cleans_stored_kernel_tables() -> None:
    kernel = {"name": "void gemm_kernel<float>()", "calls": 16.0, "ms": 2.0}
    stored = {"steps": 5, "busy_ms": 17.5, "launches": 612.0, "top": [
        {"name": "forward", "calls": 1.0, "ms": 7.5}, kernel,
        {"name": "Optimizer.step#AdamW.step", "calls": 1.0, "ms": 0.5},
    ]}  # fmt: skip
    clean = drop_annotations(stored)
    assert clean == {"steps": 5, "busy_ms": pytest.approx(9.5), "launches": 610.0, "top": [kernel]}
    assert drop_annotations(clean) == clean and len(stored["top"]) == 3  # idempotent, input kept


def test_compiled_head_probe_is_the_same_model() -> None:
    """``mol_compiled_head`` runs the MoL head's sampled call under torch.compile: same loss, same gradients."""
    eager = head_step_module(TINY, "mol", CPU).eval()  # eval: no dropout draws (Inductor draws its own)
    compiled = head_step_module(TINY, "mol_compiled_head", CPU).eval()
    compiled.load_state_dict(eager.state_dict())
    batch = random_batch(torch.full((TINY.batch,), TINY.seq_len), TINY.seq_len, TINY.num_items, CPU)
    losses, grads = [], []
    for module in (eager, compiled):
        torch.manual_seed(3)  # the same negatives
        total, _ = module.training_loss(batch)
        total.backward()
        losses.append(total.detach())
        grads.append(module.similarity.gating.qi_part[1].weight.grad.clone())
    assert "forward_sampled" in vars(compiled.similarity) and "forward_sampled" not in vars(eager.similarity)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-5)


def test_captured_variant_needs_cuda_and_a_capturable_optimizer() -> None:
    module = head_step_module(TINY, "mol", CPU, "captured")
    assert module.configure_optimizers().defaults["capturable"] is True
    assert head_step_module(TINY, "mol", CPU).configure_optimizers().defaults["capturable"] is False
    with pytest.raises(ValueError, match="needs a CUDA device"):
        bench_head_step(TINY, "dot", "fp32", CPU, 0, 1, variant="captured")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("head", ["dot", "mol"])
def test_captured_step_trains_like_the_eager_one(head: str) -> None:
    """Each replay of the captured step is one AdamW step: parameters move, losses stay finite and fall."""
    from rails.models.benchmark import capture_step

    cuda = torch.device("cuda")
    torch.manual_seed(0)
    module = head_step_module(TINY, head, cuda, "captured")
    optimizer = module.configure_optimizers()
    batch = random_batch(torch.full((TINY.batch,), TINY.seq_len), TINY.seq_len, TINY.num_items, cuda)
    losses: list[torch.Tensor] = []

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        total, _ = module.training_loss(batch)
        total.backward()
        optimizer.step()
        losses.append(total)

    replay = capture_step(step, optimizer, cuda)
    captured_loss = losses[-1]  # the capture's static output, rewritten by every replay
    before = [p.detach().clone() for p in module.parameters()]
    seen = []
    for _ in range(30):
        replay()
        seen.append(float(captured_loss))
    assert all(math.isfinite(v) for v in seen) and min(seen[-5:]) < seen[0]
    assert any(not torch.equal(a, p) for a, p in zip(before, module.parameters(), strict=True))


def test_probe_rows_do_not_decide_the_acceptance() -> None:
    """The captured step and the compiled head are probes: their own line, against the dot row of their variant."""
    row = {"precision": "fp32", "M": 10, "std_ms": 0.0, "peak_gib": float("nan")}
    rows = [
        {**row, "head": "dot", "mean_ms": 16.0, "variant": "eager"},
        {**row, "head": "mol", "mean_ms": 32.0, "variant": "eager"},
        {**row, "head": "mol_compiled_head", "mean_ms": 22.0, "variant": "eager"},
        {**row, "head": "dot", "mean_ms": 8.0, "variant": "captured"},
        {**row, "head": "mol", "mean_ms": 11.0, "variant": "captured"},
    ]
    meta = {"device_name": "NVIDIA H200", "command": "c", "commit": None}
    report = head_step_report(rows, TINY, **meta, warmup=0, iters=1, full_length=False, tiny=False)
    text = head_step_markdown(json.loads(json.dumps(report)))
    assert "not met (MoL / the fastest dot step, 16.00 ms: mol fp32 eager 2.0)" in text
    assert "mol_compiled_head fp32 eager 1.38, mol fp32 captured 1.38" in text
