"""CUDA-graph replay of a fixed-shape search stage (the candidate + re-scoring step of approximate indexes).

An approximate MoL search at B = 32 queries is a few hundred small kernels (reference scores, gating MLP,
shortlist, list scan, re-scoring, top-k), small enough that their launches may cost more than their arithmetic
(the ``+graphs`` rows of ``scripts/bench_topk.py`` measure how much replay saves).
:class:`GraphedStage` captures such a stage once per input signature (shapes, dtypes, devices of the query
state's tensors, ``k``, the exclusion tensor's shape) into a ``torch.cuda.CUDAGraph`` and afterwards only
copies the new inputs into the captured ones and replays it.

Requirements of the stage: no host synchronisation and no data-dependent shapes (the candidate indexes are
written that way: fixed-size top-k everywhere, exact-fallback handling after the stage). What the stage reads
besides its inputs (item state, lists, head weights) is read from the same memory at every replay, so a
rebuilt index must :meth:`GraphedStage.clear` its graphs (in-place weight updates are seen). A stage that
cannot be captured falls back to eager calls for that signature, with one warning naming the error: a host
synchronisation is caught in the warm-up (``torch.cuda.set_sync_debug_mode("error")``) before a capture starts;
on CPU tensors the stage runs eagerly (one info line).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import Tensor

from rails.log import get_logger
from rails.models.similarity.states import HeadState

log = get_logger(__name__)

Stage = Callable[[HeadState, int, Tensor | None], tuple[Tensor, ...]]


def _signature(state: HeadState, k: int, exclude: Tensor | None) -> Hashable:
    fields = tuple((name, tuple(t.shape), t.dtype, t.device) for name, t in state.tensors().items())
    ex = None if exclude is None else (tuple(exclude.shape), exclude.dtype, exclude.device)
    return (type(state), fields, k, ex)


@dataclasses.dataclass
class _Captured:
    graph: Any  # torch.cuda.CUDAGraph
    state: HeadState
    exclude: Tensor | None
    outputs: tuple[Tensor, ...]


class GraphedStage:
    """Run ``stage(query_state, k, exclude_positions)`` through captured CUDA graphs (module doc).

    Args:
        stage: the fixed-shape function; returns a tuple of tensors.
        name: for log lines (the index class).
        warmup: eager calls on a side stream before a capture (lazy initialisation, kernel autotuning).
    """

    def __init__(self, stage: Stage, name: str, warmup: int = 2) -> None:
        self.stage = stage
        self.name = name
        self.warmup = warmup
        self._graphs: dict[Hashable, _Captured] = {}
        self._eager: set[Hashable] = set()
        self._cpu_logged = False

    def clear(self) -> None:
        """Drop every captured graph (after a rebuild: the graphs read the old tensors' memory)."""
        self._graphs.clear()
        self._eager.clear()

    @property
    def captured(self) -> int:
        """Number of signatures replayed from a graph."""
        return len(self._graphs)

    def __call__(self, query_state: HeadState, k: int, exclude: Tensor | None) -> tuple[Tensor, ...]:
        tensors = query_state.tensors()
        if not all(t.is_cuda for t in tensors.values()):
            if not self._cpu_logged:
                log.info(f"{self.name}: cuda_graphs needs CUDA tensors; running the search eagerly")
                self._cpu_logged = True
            return self.stage(query_state, k, exclude)
        key = _signature(query_state, k, exclude)
        if key in self._eager:
            return self.stage(query_state, k, exclude)
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._capture(key, query_state, k, exclude)
            if captured is None:
                return self.stage(query_state, k, exclude)
        for name, tensor in tensors.items():
            getattr(captured.state, name).copy_(tensor)
        if exclude is not None:
            assert captured.exclude is not None
            captured.exclude.copy_(exclude)
        captured.graph.replay()
        return tuple(out.clone() for out in captured.outputs)  # the next replay overwrites them

    def _capture(
        self, key: Hashable, query_state: HeadState, k: int, exclude: Tensor | None
    ) -> _Captured | None:
        static_state = dataclasses.replace(
            query_state, **{name: t.clone() for name, t in query_state.tensors().items()}
        )
        static_exclude = None if exclude is None else exclude.clone()
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            # A host synchronisation inside a capture invalidates it and can leave CUDA's RNG state marked as
            # capturing (every later random op fails): the eager warm-up runs with synchronising ops as errors,
            # so such a stage is refused before any capture starts.
            previous = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("error")
            try:
                with torch.cuda.stream(side):
                    for _ in range(self.warmup):
                        self.stage(static_state, k, static_exclude)
            finally:
                torch.cuda.set_sync_debug_mode(previous)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outputs = self.stage(static_state, k, static_exclude)
        except Exception as error:  # noqa: BLE001 - any capture failure means: run this signature eagerly
            log.warning(
                f"{self.name}: CUDA graph capture failed for batch {len(query_state)}, k {k} "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                "this shape runs eagerly"
            )
            self._eager.add(key)
            return None
        captured = _Captured(graph, static_state, static_exclude, tuple(outputs))
        self._graphs[key] = captured
        log.info(f"{self.name}: captured the search of batch {len(query_state)}, k {k} in a CUDA graph")
        return captured
