"""End-to-end training runs on CPU through the Hydra config (tiny sizes)."""

from __future__ import annotations

import json
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from rails.train import run
from tests.conftest import TINY_OVERRIDES, compose_config, shrink


def test_fast_dev_run(tiny_train_cfg) -> None:
    with open_dict(tiny_train_cfg):
        tiny_train_cfg.trainer.fast_dev_run = True
    metrics = run(tiny_train_cfg)
    assert "test/hr@10" in metrics


def test_one_epoch_writes_metrics_and_checkpoints(tmp_path: Path) -> None:
    cfg = shrink(compose_config("train", TINY_OVERRIDES), tmp_path)
    metrics = run(cfg)
    GlobalHydra.instance().clear()
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written.keys() == metrics.keys()
    for key in (
        "val/hr@10",
        "val/ndcg@10",
        "val/mrr",
        "test/hr@10",
        "test/ndcg@200",
        "test/popularity/hr@10",
    ):
        assert 0.0 <= written[key] <= 1.0, key
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints
    assert any(name.startswith("epoch_") for name in checkpoints)


def test_sasrec_beats_popularity_on_synthetic_data(tmp_path: Path) -> None:
    overrides = [
        *TINY_OVERRIDES,
        "data.source.num_users=400",
        "data.source.num_items=200",
        "data.source.num_clusters=10",
        "data.source.max_length=40",
        "trainer.max_epochs=12",
        "model.negatives.num_negatives=32",
        "model.optimizer.lr=3e-3",
    ]
    cfg = shrink(compose_config("train", overrides), tmp_path)
    metrics = run(cfg)
    GlobalHydra.instance().clear()
    assert metrics["test/hr@10"] >= 2 * metrics["test/popularity/hr@10"], metrics
    assert metrics["test/ndcg@10"] > metrics["test/popularity/ndcg@10"]


def test_early_stopping_ends_training_after_patience_validations(tmp_path: Path) -> None:
    """A frozen model (lr 0) never improves: patience 2 stops it after 3 of its 8 epochs (one validation each)."""
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("trainer.max_epochs")] + [
        "trainer.max_epochs=8",
        "model.optimizer.lr=0.0",
        "callbacks/early_stopping=default",
        "callbacks.early_stopping.patience=2",
    ]
    cfg = shrink(compose_config("train", overrides), tmp_path)
    run(cfg)
    GlobalHydra.instance().clear()
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["epochs"] == 3
    # without the option the same run trains all 8 epochs
    assert "early_stopping" not in compose_config("train", TINY_OVERRIDES).callbacks
