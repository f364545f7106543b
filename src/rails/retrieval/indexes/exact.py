"""Exact top-k for any head: the corpus scored chunk by chunk with a running top-k, or the fused MoL kernel.

For a Mixture-of-Logits head on CUDA (or the Triton CPU interpreter), :class:`ExactTopK` can hand the states
and ``head.mixing()`` to the fused Triton kernel of :mod:`rails.kernels.mol_topk_triton`, which scores a block
of queries per pass over the item state and never writes the (B, X, P) logits or the (B, X) score matrix
to memory (:func:`fused_mol_search`).
"""

from __future__ import annotations

from torch import Tensor

from rails.models.similarity.base import SimilarityHead
from rails.models.similarity.mol import MoLSimilarity
from rails.models.similarity.states import HeadState, MoLItemState, MoLQueryState
from rails.retrieval.indexes.base import RetrievalIndex
from rails.retrieval.topk import chunked_topk


def fused_mol_unsupported(
    head: SimilarityHead, query_state: HeadState, item_state: HeadState, k: int
) -> str | None:
    """None when the fused MoL kernel applies to this head, these states and ``k``, else the reason it does not."""
    if not isinstance(head, MoLSimilarity):
        return f"head is {type(head).__name__}, not MoLSimilarity"
    # a subclass that scores otherwise (mol_cosine.MoLWithCosine): the kernel computes MoL's scores alone
    if type(head).score is not MoLSimilarity.score:
        return f"{type(head).__name__} scores other than MoLSimilarity"
    mixing = head.mixing()
    if mixing.training:
        return "head is in training mode (softmax dropout)"
    if mixing.combination != "glu_silu":
        return f"gating_combination is {mixing.combination!r}, the kernel implements 'glu_silu'"
    if not isinstance(query_state, MoLQueryState) or not isinstance(item_state, MoLItemState):
        return f"states are {type(query_state).__name__} / {type(item_state).__name__}, not MoL states"
    from rails.kernels.mol_topk_triton import fused_mol_topk_unsupported  # imports triton: only when needed

    return fused_mol_topk_unsupported(item_state.device, k)


def fused_mol_search(
    head: MoLSimilarity,
    query_state: MoLQueryState,
    item_state: MoLItemState,
    k: int,
    exclude_positions: Tensor | None = None,
    block_x: int | None = None,
    num_splits: int | None = None,
    block_q: int | None = None,
    tune: bool | None = None,
    sample_stride: int | None = 0,
    prune: bool = True,
) -> tuple[Tensor, Tensor]:
    """Exact MoL top-k through the fused kernel: (B, min(k, X)) float32 scores and corpus positions.

    Args:
        head: an eval-mode MoL head with "glu_silu" gating (see :func:`fused_mol_unsupported`).
        query_state: (B, ...) query state.
        item_state: (X, ...) item state; bf16 components run the kernel's matmuls in bf16.
        k: results per query (<= ``MAX_FUSED_K``).
        exclude_positions: (B, H) corpus positions to drop (-1 = none).
        block_x: items per kernel tile (None: autotuned on CUDA, else the kernel's per-batch default).
        num_splits: corpus splits (None: the kernel's default).
        block_q: queries per kernel program (None: autotuned on CUDA, else the kernel's default).
        tune: autotune the block sizes (None: on CUDA when neither block size is given; False: the kernel's
            per-batch defaults, no tuning compiles).
        sample_stride: 0 (default): one pass with a running top-k per program; > 1: two passes
            (:mod:`rails.kernels.mol_topk_two_pass`): thresholds from every ``sample_stride``-th item, then
            only the keys above them leave the kernel; None: the two-pass default stride for this corpus.
        prune: skip the gating MLP of tiles whose best pair logit cannot reach the threshold (exact).
    """
    from rails.kernels.mol_topk_two_pass import two_pass_mol_topk

    mixing = head.mixing()
    return two_pass_mol_topk(
        query_state.components,
        query_state.gate,
        item_state.components,
        item_state.gate,
        qi_hidden_weight=mixing.qi_hidden_weight,
        qi_hidden_bias=mixing.qi_hidden_bias,
        qi_out_weight=mixing.qi_out_weight,
        qi_out_bias=mixing.qi_out_bias,
        temperature=mixing.temperature,
        k=k,
        exclude_positions=exclude_positions,
        block_x=block_x,
        num_splits=num_splits,
        block_q=block_q,
        tune=tune,
        sample_stride=sample_stride,
        prune=prune,
    )


class ExactTopK(RetrievalIndex):
    """Exact top-k for any head: the corpus is scored in chunks with a running top-k.

    Memory is bounded by (B, chunk_size) scores plus whatever the head needs to score a chunk. For the
    dot-product head each chunk is one matmul followed by ``topk``. A Mixture-of-Logits head can instead use
    the fused Triton kernel (``fused``), which never writes the logits or the score matrix to memory.

    Args:
        chunk_size: corpus items scored at once.
        fused: ``True`` requires the fused MoL kernel, ``False`` never uses it, ``None`` uses it when
            it applies (MoL head with "glu_silu" gating, not training, CUDA + Triton, k <= its limit).
        build_batch_size: items encoded at once by :meth:`build`.
        fused_block_x: items per tile of the fused kernel (None: its default; tuning).
        fused_num_splits: corpus splits of the fused kernel (None: its default; tuning).
        fused_block_q: queries per program of the fused kernel (None: its default; tuning).
        fused_sample_stride: None (default): one pass up to 10M items, two passes above (thresholds from a
            strided sample first, :func:`fused_mol_search`; every 64th item at k = 100;
            :func:`rails.kernels.mol_topk_two_pass.default_sample_stride`); 0: one pass; > 1: two passes with
            that stride. Two passes were 9 % faster at 1M and 10M items, B = 32, 8x4x64 (9.72 vs 10.69 ms, 63.0
            vs 69.5 ms, H200: results/profiles/2026-12-01-h200-fused-exact-{1M,10M}.md) with one sort per merged
            tile; with the running top-k's merges parked (``merge_tiles``, now the default) one pass is faster
            at 1M and 10M (7.26 vs 9.57 ms, 56.13 vs 63.90 ms, results/profiles/2026-12-02-h200-round24-*.md);
            larger corpora are not timed that way yet.
        fused_prune: the fused kernel's exact tile prune (skip the gating MLP of tiles whose best pair logit
            cannot reach the k-th best). Off by default: the mixture sits far below the best pair logit, so
            the bound keeps every tile (``scripts/study_tile_bounds.py``) and the check only costs time (12.72
            vs 10.42 ms at 1M items, B = 32, H200: results/profiles/2026-12-01-h200x2-fused-exact-1M.md).
    """

    def __init__(
        self,
        chunk_size: int = 65536,
        fused: bool | None = None,
        build_batch_size: int = 65536,
        fused_block_x: int | None = None,
        fused_num_splits: int | None = None,
        fused_block_q: int | None = None,
        fused_sample_stride: int | None = None,
        fused_prune: bool = False,
    ) -> None:
        super().__init__(build_batch_size)
        if chunk_size < 1:
            raise ValueError(f"retrieval index chunk_size must be >= 1, got {chunk_size}")
        tiles = (("fused_block_x", fused_block_x), ("fused_num_splits", fused_num_splits))
        for name, value in (*tiles, ("fused_block_q", fused_block_q)):
            if value is not None and value < 1:
                raise ValueError(f"retrieval index {name} must be >= 1 or null, got {value}")
        self.chunk_size = chunk_size
        self.fused = fused
        self.fused_block_x = fused_block_x
        self.fused_num_splits = fused_num_splits
        self.fused_block_q = fused_block_q
        if fused_sample_stride is not None and fused_sample_stride < 0:
            raise ValueError(f"fused_sample_stride must be >= 0 or null, got {fused_sample_stride}")
        self.fused_sample_stride = fused_sample_stride
        self.fused_prune = fused_prune

    def _use_fused(self, query_state: HeadState, k: int) -> bool:
        if self.fused is False:
            return False
        assert self.head is not None and self.item_state is not None
        reason = fused_mol_unsupported(self.head, query_state, self.item_state, k)
        if reason is None:
            return True
        if self.fused:
            raise ValueError(f"ExactTopK(fused=True) cannot use the fused MoL kernel: {reason}")
        return False

    def _search(
        self, query_state: HeadState, k: int, exclude_positions: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        head = self._require_built()
        item_state = self.item_state
        assert item_state is not None
        if self._use_fused(query_state, k):
            assert isinstance(head, MoLSimilarity)
            return fused_mol_search(
                head,
                query_state,  # type: ignore[arg-type]
                item_state,  # type: ignore[arg-type]
                k,
                exclude_positions,
                block_x=self.fused_block_x,
                num_splits=self.fused_num_splits,
                block_q=self.fused_block_q,
                sample_stride=self.fused_sample_stride,
                prune=self.fused_prune,
            )
        return chunked_topk(
            lambda start, end: head.score(query_state, item_state.index(slice(start, end))),
            self.num_items,
            len(query_state),
            k,
            self.chunk_size,
            exclude_positions,
            stable=True,
            device=self.item_ids.device,
        )
