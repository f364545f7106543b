"""``data.timestamps=positions`` replaces every user's timestamps by 0..n-1 (the time-bias ablation)."""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import pytest
import torch

from tests.conftest import TINY_OVERRIDES, compose_config, shrink


def _datamodule(tmp_path: Path, mode: str):
    cfg = shrink(compose_config("train", [*TINY_OVERRIDES, f"data.timestamps={mode}"]), tmp_path)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def test_positions_replace_timestamps(tmp_path: Path) -> None:
    real = _datamodule(tmp_path, "data")._require_data()
    positions = _datamodule(tmp_path, "positions")
    data = positions._require_data()
    np.testing.assert_array_equal(data.item_ids, real.item_ids)  # only the timestamps change
    for user in (0, len(data.user_ids) - 1):
        start, end = data.offsets[user], data.offsets[user + 1]
        np.testing.assert_array_equal(data.timestamps[start:end], np.arange(end - start))
    assert not np.array_equal(real.timestamps, data.timestamps)
    example = positions.dataset("test")[0]
    n = int(example["lengths"])
    assert torch.equal(example["history_timestamps"][:n], example["target_timestamps"] - n + torch.arange(n))


def test_unknown_timestamp_mode_is_named(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="data.timestamps must be 'data' or 'positions'"):
        _datamodule(tmp_path, "hours")
