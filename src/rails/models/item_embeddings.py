"""The item-id embedding table shared by encoder inputs and candidate items (spec §4.1)."""

from __future__ import annotations

from torch import Tensor, nn

from rails.models.encoders.base import truncated_normal_


class ItemEmbeddings(nn.Module):
    """Embedding(num_items, D, padding_idx=0), truncated-normal std ``init_std`` (0.02 in the paper).

    Args:
        num_items: rows = max item id + 1 (row 0 is padding).
        dim: D.
        init_std: initialisation std.
    """

    def __init__(self, num_items: int, dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        if num_items < 2:
            raise ValueError(f"num_items must be >= 2 (padding row + one item), got {num_items}")
        self.table = nn.Embedding(num_items, dim, padding_idx=0)
        truncated_normal_(self.table.weight, init_std)

    @property
    def num_items(self) -> int:
        return self.table.num_embeddings

    @property
    def dim(self) -> int:
        return self.table.embedding_dim

    def forward(self, item_ids: Tensor) -> Tensor:
        """(*S,) int64 ids -> (*S, D)."""
        return self.table(item_ids)
