"""Small operations helpers: RNG capture/restore, throughput, run metadata."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rails.callbacks.rng import capture_rng_state, restore_rng_state
from rails.callbacks.throughput import SequenceThroughput
from rails.runs.record import flatten, parameter_counts


def _draw() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_rng_state_roundtrip_survives_weights_only_serialisation(tmp_path) -> None:
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    state = capture_rng_state()
    expected = _draw()
    torch.save({"rng": state}, tmp_path / "s.pt")
    _draw()
    restore_rng_state(torch.load(tmp_path / "s.pt", weights_only=True)["rng"])
    assert _draw() == expected


def test_throughput_counts_sequences_of_all_ranks(monkeypatch) -> None:
    clock = iter([0.0, 1.0, 2.0, 3.0])
    monkeypatch.setattr("rails.callbacks.throughput.time.perf_counter", lambda: next(clock))
    logged: dict[str, float] = {}
    module = SimpleNamespace(log=lambda name, value, **kw: logged.__setitem__(name, value))
    trainer = SimpleNamespace(world_size=2)
    callback = SequenceThroughput(window=2)
    callback.on_train_epoch_start(trainer, module)  # t=0
    callback.on_train_batch_end(trainer, module, None, list(range(8)), 0)  # t=1: 8 seqs in 1 s x 2 ranks
    assert logged["train/seq_per_s"] == pytest.approx(16.0)
    callback.on_train_batch_end(trainer, module, None, list(range(4)), 1)  # t=2: 12 in 2 s
    assert logged["train/seq_per_s"] == pytest.approx(12.0)
    callback.on_train_batch_end(trainer, module, None, list(range(4)), 2)  # t=3: window=2 -> 8 in 2 s
    assert logged["train/seq_per_s"] == pytest.approx(8.0)
    with pytest.raises(ValueError, match="callbacks.throughput.window"):
        SequenceThroughput(window=0)


def test_flatten_and_parameter_counts() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}
    layer = torch.nn.Linear(3, 2)
    layer.bias.requires_grad_(False)
    assert parameter_counts(layer) == {
        "model/params/total": 8,
        "model/params/trainable": 6,
        "model/params/non_trainable": 2,
    }
