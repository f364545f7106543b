"""Position alignment of the sequence encoders' input (``PositionalInput``, ``position_alignment``).

"left" (the spec's) counts positions from the oldest kept item; "right" from the newest, as the left-padded
SASRec / S3-Rec code does, so the newest item always gets the last position embedding. Both alignments
keep the encoders invariant to extra padding columns and causal in the items they see.
"""

from __future__ import annotations

import pytest
import torch

from rails.batch import SequenceBatch
from rails.models.encoders import HSTU, SequenceHistory
from rails.models.encoders.base import PositionalInput
from rails.models.encoders.sasrec import SASRec
from tests.conftest import compose_config
from tests.test_hstu import random_batch


def test_right_alignment_puts_the_newest_item_on_the_last_position():
    torch.manual_seed(0)
    left, right = PositionalInput(4, 6, 0.0), PositionalInput(4, 6, 0.0, "right")
    right.positions.weight.data.copy_(left.positions.weight.data)
    lengths = torch.tensor([2, 5, 6])
    mask = torch.arange(6)[None, :] < lengths[:, None]
    items = torch.zeros(3, 6, 4)  # positions only
    table = left.positions.weight.data
    got_left, got_right = left(items, mask), right(items, mask)
    for row, length in enumerate(lengths.tolist()):
        torch.testing.assert_close(got_left[row, :length], table[:length])
        torch.testing.assert_close(got_right[row, :length], table[6 - length :])
        assert not got_right[row, length:].any() and not got_left[row, length:].any()
    with pytest.raises(ValueError, match="position alignment"):
        PositionalInput(4, 6, 0.0, "middle")  # type: ignore[arg-type]


def padded(batch: SequenceBatch, pad: int) -> SequenceBatch:
    widen = lambda t: torch.nn.functional.pad(t, (0, pad))  # noqa: E731
    fields = ("history_ids", "history_timestamps", "history_ratings")
    return SequenceBatch(**{**batch.__dict__, **{name: widen(getattr(batch, name)) for name in fields}})


def encoders(alignment: str) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    hstu = HSTU(dim=16, max_seq_len=12, num_blocks=2, num_heads=2, qk_dim=4, v_dim=6, attention_impl="torch",
                position_alignment=alignment)  # fmt: skip
    sasrec = SASRec(dim=16, max_seq_len=12, num_blocks=2, num_heads=2, ffn_hidden_dim=16,
                    position_alignment=alignment)  # fmt: skip
    return [hstu.eval(), sasrec.eval()]


@pytest.mark.parametrize("alignment", ["left", "right"])
def test_padding_columns_do_not_change_the_outputs(alignment):
    batch = random_batch([7, 3, 9], n=9)
    emb = torch.randn(3, 9, 16)
    wide = padded(batch, 3)
    noisy = torch.cat([emb, torch.randn(3, 3, 16)], dim=1)
    noisy[~wide.valid_mask] = torch.randn(int((~wide.valid_mask).sum()), 16)  # garbage at padding
    for model in encoders(alignment):
        base = model(emb, SequenceHistory.of(batch))
        out = model(noisy, SequenceHistory.of(wide))
        torch.testing.assert_close(out[:, :9][batch.valid_mask], base[batch.valid_mask])


def test_right_alignment_changes_what_a_position_means():
    """The same history left- or right-aligned: equal embeddings only where length = max_seq_len."""
    batch = random_batch([12, 5], n=12)
    emb = torch.randn(2, 12, 16)
    for left, right in zip(encoders("left"), encoders("right"), strict=True):
        right.load_state_dict(left.state_dict())
        a, b = left(emb, SequenceHistory.of(batch)), right(emb, SequenceHistory.of(batch))
        torch.testing.assert_close(a[0], b[0])  # a full window: the same positions
        assert not torch.allclose(a[1, :5], b[1, :5])


@pytest.mark.parametrize("encoder", ["sasrec", "hstu"])
def test_the_option_composes_and_bad_values_name_the_key(encoder):
    from hydra.utils import instantiate

    from rails.config import check_config

    cfg = compose_config("train", [f"model/encoder={encoder}", "model.encoder.position_alignment=right"])
    check_config(cfg)
    assert instantiate(cfg.model.encoder).input.alignment == "right"
    bad = compose_config("train", [f"model/encoder={encoder}", "model.encoder.position_alignment=middle"])
    with pytest.raises(ValueError, match="position_alignment"):
        check_config(bad)
