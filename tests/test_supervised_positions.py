"""The supervised positions of a sequence batch, selected without a device-to-host synchronisation.

A training step indexes its (B, N) per-position outputs with the positions that predict a real item. The
batch counts them when it is built on the CPU (collate), so the selection on the device needs no
``nonzero`` (a host sync in the middle of the forward, after which the host cannot run ahead of the GPU).
"""

from __future__ import annotations

import torch

from rails.batch import SequenceBatch, collate_sequences
from tests.conftest import TINY_OVERRIDES, build_model_and_loader, compose_config, shrink
from tests.test_hstu import random_batch


def test_positions_equal_the_boolean_mask_in_row_major_order():
    batch = random_batch([7, 3, 9, 1], n=9)
    batch.history_ids[1, 1] = 0  # a padding id inside a history: its predecessor predicts nothing
    batch = SequenceBatch(**{**batch.__dict__})  # recounted on the CPU
    mask = batch.valid_mask & (batch.next_ids() != 0)
    assert batch.supervised_count == int(mask.sum()) == 7 + 3 + 9 + 1 - 1
    assert torch.equal(batch.supervised_positions(), mask.flatten().nonzero().squeeze(1))
    last = torch.tensor([6, 9 + 2, 18 + 8, 27 + 0])
    assert batch.last_supervised_count == 4 and torch.equal(batch.supervised_positions(last_only=True), last)
    uncounted = SequenceBatch(**{**batch.__dict__}).to("meta")  # a device batch keeps the CPU counts
    assert (uncounted.supervised_count, uncounted.last_supervised_count) == (19, 4)
    uncounted = batch
    object.__setattr__(uncounted, "supervised_count", None)  # no count: the nonzero fallback, same result
    assert torch.equal(uncounted.supervised_positions(), mask.flatten().nonzero().squeeze(1))


def test_collate_counts_and_the_training_loss_is_the_same_with_or_without_them(tmp_path):
    cfg = shrink(compose_config("train", TINY_OVERRIDES), tmp_path)
    model, loader = build_model_and_loader(cfg)
    batch = next(iter(loader))
    assert batch.supervised_count == int((batch.valid_mask & (batch.next_ids() != 0)).sum())
    rows = [{name: getattr(batch, name)[i] for name in ("user_ids", "history_ids", "history_timestamps",
             "history_ratings", "lengths", "target_ids", "target_timestamps", "target_ratings")}
            for i in range(len(batch))]  # fmt: skip
    assert collate_sequences(rows).supervised_count == batch.supervised_count
    model.eval()  # no dropout: the same step twice
    torch.manual_seed(0)
    counted, _ = model.training_loss(batch)
    object.__setattr__(batch, "supervised_count", None)
    torch.manual_seed(0)
    uncounted, _ = model.training_loss(batch)
    torch.testing.assert_close(counted, uncounted)
