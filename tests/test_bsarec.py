"""BSARec-style encoder (frequency filter + attention, not causal), prefix training examples, and the
last-position supervision a non-causal encoder gets.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from rails.batch import collate_sequences
from rails.datamodules.canonical import read_canonical
from rails.datamodules.sequences import SequenceExamples
from rails.models.encoders import BSARec, SequenceHistory
from rails.models.encoders.bsarec import _FrequencyFilter, blocked_keys
from tests.conftest import TINY_OVERRIDES, build_model_and_loader, compose_config, shrink
from tests.test_datamodules import _write
from tests.test_hstu import random_batch


def tiny_bsarec(**overrides: object) -> BSARec:
    kwargs: dict = {"dim": 16, "max_seq_len": 12, "num_blocks": 2, "num_heads": 2, "ffn_hidden_dim": 32}
    kwargs.update(overrides)
    torch.manual_seed(0)
    return BSARec(**kwargs).eval()


def test_filter_keeps_the_mean_and_rescales_the_highest_frequency():
    filt = _FrequencyFilter(4, keep=2, dropout=0.0)
    norm = torch.nn.functional.layer_norm
    constant = torch.randn(1, 1, 4).expand(2, 8, 4).contiguous()  # only the 0th bin
    torch.testing.assert_close(filt(constant), norm(2 * constant, (4,), eps=1e-12))
    sign = (-1.0) ** torch.arange(8.0)  # only the Nyquist bin: the high band
    alternating = sign[None, :, None] * torch.randn(2, 1, 4)
    beta2 = filt.sqrt_beta.detach().square()
    torch.testing.assert_close(filt(alternating), norm(alternating * (1 + beta2), (4,), eps=1e-12))


def test_outputs_do_not_depend_on_padding_columns_but_do_on_later_items():
    model = tiny_bsarec()
    assert model.causal is False
    batch = random_batch([7, 3, 9], n=9)
    emb = torch.randn(3, 9, 16)
    base = model(emb, SequenceHistory.of(batch))
    assert base.shape == (3, 9, 16) and not base[1, 3:].any()  # padding outputs are zero
    wide = torch.cat([emb, torch.randn(3, 3, 16)], dim=1)
    wide[0, 7:], wide[1, 3:], wide[2, 9:] = 5.0, -3.0, 7.0  # garbage at padding
    history = SequenceHistory(batch.lengths, *(torch.nn.functional.pad(t, (0, 3)) for t in (
        batch.history_timestamps, batch.next_timestamps())))  # fmt: skip
    torch.testing.assert_close(model(wide, history)[:, :9], base)
    later = emb.clone()
    later[0, 6] += torch.randn(16)  # the newest item of user 0 moves every one of its outputs (the filter)
    moved = model(later, SequenceHistory.of(batch))
    assert not torch.allclose(moved[0, :6], base[0, :6]) and torch.equal(moved[1:], base[1:])


def test_valid_queries_attend_causally_to_valid_keys_padding_queries_to_every_slot():
    valid = torch.tensor([[False, False, True, True, True], [True, True, True, True, True]])
    blocked = blocked_keys(valid)
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)  # True above the diagonal: future keys
    assert torch.equal(blocked[1], causal)
    assert not blocked[0, :2].any()  # padding rows: nothing blocked (the published -10000 mask cancels)
    expected = causal[2:].clone()
    expected[:, :2] = True  # valid rows never see a padding key
    assert torch.equal(blocked[0, 2:], expected)


def test_bad_arguments_name_the_key():
    with pytest.raises(ValueError, match="low_frequencies"):
        BSARec(dim=8, max_seq_len=10, low_frequencies=7)
    with pytest.raises(ValueError, match="alpha"):
        BSARec(dim=8, max_seq_len=10, alpha=1.5)
    with pytest.raises(ValueError, match="max_seq_len"):
        tiny_bsarec(max_seq_len=4)(torch.randn(1, 6, 16), SequenceHistory.of(random_batch([6], n=6)))


def test_prefix_examples_are_one_per_training_target(tmp_path: Path):
    data = read_canonical(_write(tmp_path, [[1, 2, 3, 4, 5, 6], [7, 8], [9, 10, 11]]))
    users = SequenceExamples(data, "train", max_seq_len=3)
    prefixes = SequenceExamples(data, "train", max_seq_len=3, prefixes=True)
    rows = [prefixes[i] for i in range(len(prefixes))]
    # user 1 (train targets s_1..s_4 = 2..5), user 3 (s_1 = 10); user 2 has no train target
    assert [(r["user_ids"].item(), r["target_ids"].item()) for r in rows] == [
        (1, 2), (1, 3), (1, 4), (1, 5), (3, 10)
    ]  # fmt: skip
    assert [r["history_ids"].tolist() for r in rows[:4]] == [[1, 0, 0], [1, 2, 0], [1, 2, 3], [2, 3, 4]]
    assert rows[3]["target_ids"] == users[0]["target_ids"] and len(users) == 2
    with pytest.raises(ValueError, match="train split"):
        SequenceExamples(data, "test", max_seq_len=3, prefixes=True)
    assert collate_sequences(rows).lengths.tolist() == [1, 2, 3, 3, 1]


def test_a_non_causal_encoder_is_supervised_at_its_last_position_only(tmp_path: Path):
    cfg = shrink(compose_config("train", [*TINY_OVERRIDES, "model/encoder=bsarec", "data.train_examples=prefixes"]),
                 tmp_path)  # fmt: skip
    try:
        model, loader = build_model_and_loader(cfg)
    finally:
        GlobalHydra.instance().clear()
    batch = next(iter(loader))
    seen: list[int] = []
    original = model.similarity.forward_sampled
    model.similarity.forward_sampled = lambda queries, *a, **k: (
        seen.append(len(queries)),
        original(queries, *a, **k),
    )[1]  # noqa: E501
    model.train()
    loss, _ = model.training_loss(batch)
    assert torch.isfinite(loss) and seen == [len(batch.lengths)]  # one supervised position per example
    assert int(batch.valid_mask.sum()) > len(batch.lengths)  # while the histories hold more positions
