"""How well a similarity head can represent given next-item distributions, with a perfect encoder.

Every user gets a free (D,) query vector and every item a free (D,) embedding; the head is trained with
full-softmax cross-entropy against the target distributions (seen items masked), so only the head's capacity
to represent the ranking is measured. With the exact distributions of the synthetic data
(:func:`rails.datamodules.synthetic_oracle.synthetic_oracle`) this says whether a gap to the Bayes ceiling
is in the head or elsewhere (docs/mol_investigation.md).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from rails.log import get_logger
from rails.models.similarity import DotProductSimilarity, MoLSimilarity

log = get_logger(__name__)


def head_capacity(
    probs: np.ndarray,
    targets: np.ndarray,
    seen: np.ndarray,
    head: Literal["dot", "mol"],
    dim: int,
    steps: int,
    seed: int = 0,
) -> float:
    """Test HR@10 of a head fitted directly to next-item distributions (a perfect encoder).

    Heads: ``dot`` = L2-normalised cosine / 0.05; ``mol`` = MoL 8x4x64 without user-id components on
    LayerNorm-ed queries, loss temperature 1 (the paper's settings otherwise).

    Args:
        probs: (U, num_items + 1) float target distributions (column 0 = padding, unused).
        targets: (U,) int64 test items.
        seen: (U, num_items + 1) bool items to mask (consumed before the test step).
        head: ``dot`` or ``mol``.
        dim: D of the free query vectors and item embeddings.
        steps: AdamW steps (batches of up to 250 users); HR@10 is measured every ``steps // 10`` steps.
        seed: torch seed of the initialisation and the batches.

    Returns:
        The best HR@10 of the test targets over the fit (pessimistic ties, seen items excluded).
    """
    if head not in ("dot", "mol"):
        raise ValueError(f"head must be 'dot' or 'mol', got {head!r}")
    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    num_users, num_items = probs.shape
    # small initial vectors: Adam moves them fast
    queries = torch.nn.Parameter(torch.randn(num_users, dim, device=device) * 0.02)
    items = torch.nn.Parameter(torch.randn(num_items - 1, dim, device=device) * 0.02)
    if head == "dot":
        similarity: torch.nn.Module = DotProductSimilarity()
        temperature, prepare = 0.05, (lambda q: q)
    else:
        similarity = MoLSimilarity(query_dim=dim, item_dim=dim, uid_hash_sizes=[])
        temperature, prepare = 1.0, (lambda q: torch.nn.functional.layer_norm(q, (dim,)))
    similarity.to(device)
    params = [queries, items, *similarity.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.98))
    target_p = torch.as_tensor(probs[:, 1:], dtype=torch.float32, device=device)
    mask = torch.as_tensor(seen[:, 1:], device=device)
    target_cols = torch.as_tensor(targets - 1, device=device)
    batch, best = min(250, num_users), 0.0
    for step in range(steps):
        similarity.train()
        rows = torch.randint(num_users, (batch,), device=device)
        scores = similarity(prepare(queries[rows]), items).scores / temperature
        log_q = torch.log_softmax(scores.masked_fill(mask[rows], -1e4), dim=-1)
        loss = -(target_p[rows] * log_q).sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % max(steps // 10, 1) == 0:
            similarity.eval()
            with torch.no_grad():
                hits = 0
                for start in range(0, num_users, batch):
                    sl = slice(start, start + batch)
                    s_all = similarity(prepare(queries[sl]), items).scores.masked_fill(
                        mask[sl], -float("inf")
                    )
                    t = s_all.gather(1, target_cols[sl, None])
                    hits += int(((s_all >= t).sum(1) <= 10).sum())
            best = max(best, hits / num_users)
            log.info(
                f"{head} D={dim} step {step + 1}: loss {loss.item():.4f} test hr@10 {hits / num_users:.4f}"
            )
    return best
