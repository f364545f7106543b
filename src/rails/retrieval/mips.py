"""Maximum-inner-product search backends for the candidate stage of approximate MoL top-k (spec §7).

A backend indexes one (X, d) matrix (an item component, or the averaged components) and returns, for
(R, d) queries, the corpus positions of their top inner products. Candidate positions only: the exact
order is irrelevant because candidates are re-scored with the full head.

- :class:`TorchMIPS`: exact, chunked matmul + ``topk`` on the tensors' device (CPU or CUDA); the
  stored matrix may be bf16 (the paper's default for the candidate stage).
- :class:`FaissMIPS`: faiss ``IndexFlatIP`` (exact) or ``IndexIVFFlat`` (inner product, ``nlist`` lists,
  ``nprobe`` probed); on a GPU when faiss-gpu is installed. When faiss is not importable it falls back to
  exact :class:`TorchMIPS`, never silently: the substitution and its reason are logged once per process
  (and recorded in ``FaissMIPS.fallback_reason``). It is refused instead (ImportError) when faiss was asked
  for explicitly: ``fallback=False`` or ``use_gpu=True``.
"""

from __future__ import annotations

import importlib.util
import logging
from abc import ABC, abstractmethod
from typing import Literal

import torch
from torch import Tensor

from rails.retrieval.topk import chunked_topk

log = logging.getLogger(__name__)
_logged_fallbacks: set[str] = set()  # reasons already logged by this process

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str | None, key: str) -> torch.dtype | None:
    """Config string ("float32", "bfloat16", "float16" or None) -> torch dtype."""
    if name is None:
        return None
    if name not in _DTYPES:
        raise ValueError(f"{key} must be one of {sorted(_DTYPES)} or null, got {name!r}")
    return _DTYPES[name]


class MIPSBackend(ABC):
    """Inner-product top-k over one indexed (X, d) matrix."""

    @abstractmethod
    def build(self, vectors: Tensor) -> None:
        """Index (X, d) vectors; positions in results refer to their rows."""

    @abstractmethod
    def search(self, queries: Tensor, k: int, exclude_positions: Tensor | None = None) -> Tensor:
        """(R, d) queries -> (R, k') int64 positions (-1 = none), k' <= k + H.

        ``exclude_positions`` (R, H) may be masked by the backend; backends that cannot mask return up to
        ``k + H`` results instead so that k non-excluded ones remain. The caller drops excluded results.
        """


class TorchMIPS(MIPSBackend):
    """Exact chunked MIPS in PyTorch.

    Args:
        chunk_size: corpus rows scored at once.
        dtype: storage/compute dtype of the indexed matrix ("bfloat16" on GPU as in the paper; null =
            keep the input dtype). Queries are cast to it.
    """

    def __init__(self, chunk_size: int = 262144, dtype: str | None = None) -> None:
        if chunk_size < 1:
            raise ValueError(f"mips chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self.dtype = resolve_dtype(dtype, "mips dtype")
        self.vectors: Tensor | None = None

    def build(self, vectors: Tensor) -> None:
        self.vectors = vectors.to(self.dtype) if self.dtype is not None else vectors

    def search(self, queries: Tensor, k: int, exclude_positions: Tensor | None = None) -> Tensor:
        if self.vectors is None:
            raise RuntimeError("TorchMIPS.build() must be called before search()")
        vectors = self.vectors
        queries = queries.to(vectors.dtype)
        _, positions = chunked_topk(
            lambda start, end: queries @ vectors[start:end].T,
            vectors.shape[0],
            queries.shape[0],
            k,
            self.chunk_size,
            exclude_positions,
            stable=False,
            device=queries.device,
        )
        return positions


def faiss_available() -> bool:
    """True when ``import faiss`` would succeed."""
    return importlib.util.find_spec("faiss") is not None


class FaissMIPS(MIPSBackend):
    """faiss inner-product index over one (X, d) matrix.

    Args:
        index: "flat" (exact ``IndexFlatIP``) or "ivf" (``IndexIVFFlat``, inner product).
        nlist: IVF lists (clipped to X); trained on the indexed vectors.
        nprobe: IVF lists probed per query.
        use_gpu: ``None`` = on a GPU when faiss has GPUs and the vectors are on CUDA; ``True`` requires it
            (and therefore faiss: no fallback).
        fallback: use exact :class:`TorchMIPS` when faiss is not importable, logging it once per process
            with the reason; ``False`` raises ImportError instead.

    faiss-gpu caps k at 2048 per search; the candidate budget per search must stay below that.
    """

    def __init__(
        self,
        index: Literal["flat", "ivf"] = "flat",
        nlist: int = 100,
        nprobe: int = 1,
        use_gpu: bool | None = None,
        fallback: bool = True,
    ) -> None:
        if index not in ("flat", "ivf"):
            raise ValueError(f"faiss mips index must be 'flat' or 'ivf', got {index!r}")
        if nlist < 1 or nprobe < 1:
            raise ValueError(f"faiss mips nlist and nprobe must be >= 1, got {nlist}, {nprobe}")
        self.index_kind = index
        self.nlist = nlist
        self.nprobe = nprobe
        self.use_gpu = use_gpu
        self._fallback: TorchMIPS | None = None
        self.fallback_reason: str | None = None
        if not faiss_available():
            reason = "faiss is not importable (pip install faiss-cpu, or faiss-gpu)"
            if not fallback or use_gpu:
                setting = "fallback=false" if not fallback else "use_gpu=true"
                raise ImportError(f"FaissMIPS({setting}) refuses to run without faiss: {reason}")
            self.fallback_reason = reason
            if reason not in _logged_fallbacks:
                _logged_fallbacks.add(reason)
                log.warning(f"FaissMIPS falls back to exact TorchMIPS candidates: {reason}")
            self._fallback = TorchMIPS()
        self._index = None
        self._device = torch.device("cpu")
        self._num_items = 0

    def build(self, vectors: Tensor) -> None:
        if self._fallback is not None:
            self._fallback.build(vectors)
            return
        import faiss

        self._device = vectors.device
        self._num_items, dim = vectors.shape
        data = vectors.detach().float().cpu().contiguous().numpy()
        if self.index_kind == "flat":
            index = faiss.IndexFlatIP(dim)
        else:
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(
                quantizer, dim, max(1, min(self.nlist, self._num_items)), faiss.METRIC_INNER_PRODUCT
            )
            index.train(data)
            index.nprobe = self.nprobe
        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        on_gpu = self.use_gpu if self.use_gpu is not None else (gpus > 0 and vectors.is_cuda)
        if on_gpu:
            if gpus == 0:
                raise ValueError("FaissMIPS(use_gpu=True) but faiss has no GPU support (install faiss-gpu)")
            self._resources = faiss.StandardGpuResources()
            device = (vectors.device.index or 0) if vectors.is_cuda else 0
            index = faiss.index_cpu_to_gpu(self._resources, device, index)
            if self.index_kind == "ivf":
                faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", self.nprobe)
        index.add(data)
        self._index = index

    def search(self, queries: Tensor, k: int, exclude_positions: Tensor | None = None) -> Tensor:
        if self._fallback is not None:
            return self._fallback.search(queries, k, exclude_positions)
        if self._index is None:
            raise RuntimeError("FaissMIPS.build() must be called before search()")
        extra = 0 if exclude_positions is None else int((exclude_positions >= 0).sum(dim=1).max().item())
        width = min(k + extra, self._num_items)
        if width == 0:
            return torch.empty(queries.shape[0], 0, dtype=torch.int64, device=queries.device)
        _, labels = self._index.search(queries.detach().float().cpu().contiguous().numpy(), width)
        return torch.from_numpy(labels).to(device=queries.device, dtype=torch.int64)
