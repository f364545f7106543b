"""`rails-eval` rebuilds a run from its checkpoint and reproduces its metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from rails.eval import evaluate, load_checkpoint
from rails.train import run
from tests.conftest import TINY_OVERRIDES, compose_config, shrink


def test_eval_reproduces_training_metrics(tmp_path: Path) -> None:
    cfg = shrink(compose_config("train", TINY_OVERRIDES), tmp_path / "train")
    trained = run(cfg)
    GlobalHydra.instance().clear()
    ckpt = next((tmp_path / "train" / "run" / "checkpoints").glob("epoch_*.ckpt"))
    eval_cfg = shrink(
        compose_config("eval", [f"ckpt_path={ckpt}", "trainer.accelerator=cpu"]), tmp_path / "eval"
    )
    with open_dict(eval_cfg):
        eval_cfg.trainer.enable_progress_bar = False
    evaluated = evaluate(eval_cfg)
    GlobalHydra.instance().clear()
    for key in ("val/hr@10", "val/ndcg@10", "test/hr@10", "test/mrr", "test/popularity/hr@10"):
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-6), key
    assert (tmp_path / "eval" / "run" / "metrics.json").is_file()


def test_eval_rejects_foreign_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="not written by rails-train"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.ckpt")
