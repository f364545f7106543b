"""Profiles of one training (or search) step: leaf-op counts per phase and device-kernel tables.

Used by ``scripts/bench_mol_step.py`` (:mod:`rails.models.benchmark`) and ``scripts/profile_index.py``; the
tables leave out the profiler's user annotations (``record_function`` ranges), which are not kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

# Profiler names that are views, allocations or bookkeeping, not a computing kernel.
_NOT_KERNELS = frozenset(
    f"aten::{name}"
    for name in (  # noqa: SIM905
        "view reshape _reshape_alias expand expand_as view_as transpose t as_strided as_strided_ slice select "
        "unsqueeze squeeze unsqueeze_ squeeze_ permute alias unflatten flatten detach empty empty_strided "
        "empty_like resolve_conj resolve_neg lift_fresh _unsafe_view split split_with_sizes chunk narrow unbind "
        "movedim diagonal unfold result_type is_nonzero item _local_scalar_dense contiguous to _to_copy type_as "
        "set_ numel size stride dim matrix_H"
    ).split()
)


def count_step_ops(
    step: Callable[[], None], phases: Sequence[str] = ("forward", "backward", "optimizer")
) -> dict:
    """Leaf aten ops of one ``step`` per phase (a proxy for GPU kernel launches), from ``torch.profiler``.

    ``step`` must open ``torch.profiler.record_function(phase)`` ranges; an op is counted in the phase whose
    range contains its start (autograd ops run on the engine's thread inside the backward range). A leaf op is
    an aten op with no aten child that is not a view or allocation; on CPU an ``addmm`` counts its bias copy
    and a dropout its three steps, on CUDA each is one kernel, so CPU counts overstate GPU launches a little.

    Returns:
        ``{f"{phase}_ops": count}`` for every phase.
    """
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    events = list(prof.events())
    ranges = {e.name: (e.time_range.start, e.time_range.end) for e in events if e.name in phases}
    counts = dict.fromkeys(phases, 0)
    for event in events:
        if not event.name.startswith("aten::") or event.name in _NOT_KERNELS:
            continue
        if any(c.name.startswith("aten::") and c.name not in _NOT_KERNELS for c in event.cpu_children):
            continue
        start = event.time_range.start
        inside = [name for name, (a, z) in ranges.items() if a <= start <= z]
        counts[inside[0] if inside else "backward"] += 1
    return {f"{phase}_ops": n for phase, n in counts.items()}


# record_function ranges, not kernels: the step's phases (bench_head_step), torch.optim's
# "Optimizer.step#AdamW.step", the profiler's and torch.compile's ranges. The profiler tags them
# (``is_user_annotation``); these names are the fallback where it does not (older torch) and the filter of
# profiles stored by the earlier, unfiltered ``profile_step_kernels`` (:func:`drop_annotations`).
_ANNOTATIONS = frozenset(("forward", "backward", "optimizer", "CompiledFunction", "CompiledFunctionBackward"))
_ANNOTATION_PREFIXES = ("Optimizer.", "ProfilerStep#", "Torch-Compiled Region", "## ")


def is_annotation_name(name: str) -> bool:
    """Whether a profiler row's name is a ``record_function`` range of the benchmarked code, not a kernel."""
    return name in _ANNOTATIONS or name.startswith(_ANNOTATION_PREFIXES)


def _is_annotation(event: Any) -> bool:
    """A user annotation (a ``record_function`` range, on the host or its device-side copy), not a kernel.

    The profiler's own flag where it has one (``FunctionEvent`` / ``FunctionEventAvg.is_user_annotation``,
    set for USER_ANNOTATION and GPU_USER_ANNOTATION activities); the range names otherwise.
    """
    flag = getattr(event, "is_user_annotation", None)
    return bool(flag) if flag is not None else is_annotation_name(event.key)


def kernel_table(averages: Sequence[Any], cuda: bool, steps: int = 1, top: int = 10) -> dict[str, Any]:
    """The device time of ``torch.profiler``'s ``key_averages()`` rows: kernels only, per step.

    On CUDA the rows of device type CUDA (kernels, memcpy, memset) by self device time, on CPU the leaf
    aten ops by self CPU time; user annotations (the step's ``forward`` range, ``Optimizer.step#...``) are
    never counted: their device-side copies span many kernels, so summing them counted time twice.
    """
    if cuda:
        kernels = [e for e in averages if e.device_type == torch.autograd.DeviceType.CUDA]
    else:
        kernels = [e for e in averages if e.key.startswith("aten::") and e.key not in _NOT_KERNELS]
    kernels = [e for e in kernels if not _is_annotation(e)]
    seconds = [getattr(e, "self_device_time_total", 0.0) if cuda else e.self_cpu_time_total for e in kernels]
    ranked = sorted(zip(kernels, seconds, strict=True), key=lambda pair: -pair[1])
    return {
        "steps": steps,
        "busy_ms": sum(seconds) / steps / 1000,
        "launches": sum(e.count for e in kernels) / steps,
        "top": [
            {"name": e.key[:160], "calls": e.count / steps, "ms": us / steps / 1000} for e, us in ranked[:top]
        ],
    }


def profile_step_kernels(
    step: Callable[[], None], device: torch.device, steps: int = 5, top: int = 10
) -> dict[str, Any]:
    """Where a step's device time goes: its ``top`` kernels by self device time (CPU: leaf aten ops).

    On CUDA, ``busy_ms`` (kernel time per step) against the timed step shows how launch-bound the step is:
    the rest of the step the GPU waits for the host to launch the next kernel. Only kernels are summed
    (:func:`kernel_table`), never the step's ``record_function`` ranges.

    Returns:
        ``steps``, ``busy_ms`` and ``launches`` per step, and ``top``: ``{"name", "calls", "ms"}`` per step.
    """
    cuda = device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize(device)
    return kernel_table(prof.key_averages(), cuda, steps, top)


def drop_annotations(profile: dict[str, Any]) -> dict[str, Any]:
    """A stored :func:`profile_step_kernels` result without user-annotation rows (by name).

    Profiles written before the annotations were filtered listed e.g. ``forward`` and summed it into
    ``busy_ms`` (above 100 % of the step): the listed annotation rows leave ``top``, their ms ``busy_ms``
    and their calls ``launches``. Annotations that were not in the stored top cannot be taken out (each is
    shorter than the last listed row). A clean profile comes back unchanged.
    """
    dropped = [k for k in profile["top"] if is_annotation_name(k["name"])]
    if not dropped:
        return profile
    return {
        **profile,
        "busy_ms": profile["busy_ms"] - sum(k["ms"] for k in dropped),
        "launches": profile["launches"] - sum(k["calls"] for k in dropped),
        "top": [k for k in profile["top"] if not is_annotation_name(k["name"])],
    }
