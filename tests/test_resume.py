"""Exact resume: a run restarted from a mid-epoch ``last.ckpt`` ends with the same metrics as one that never stopped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch.callbacks import Callback
from omegaconf import open_dict

from rails.runs.checkpoints import AtomicCheckpointIO
from rails.train import resolve_ckpt_path, run
from tests.conftest import REPO_ROOT, TINY_OVERRIDES, compose_config, shrink

# 120 users / batch 16 = 8 steps per epoch; last.ckpt every 5 steps: 5, 10 (epoch 1, batch 1), 15.
RESUME_OVERRIDES = [
    *TINY_OVERRIDES,
    "data.batch_size=16",
    "trainer.max_epochs=2",
    "trainer.deterministic=true",
    "callbacks.step_checkpoint.every_n_train_steps=5",
    "~callbacks.throughput",
]
SAVED_STEP = 10


class KillAt(Callback):
    """SIGKILL this process at the end of optimizer step ``step`` (before that step's checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class CopyLastAt(Callback):
    """Copy ``last.ckpt`` (written at an earlier step) to ``target`` at the end of step ``step``."""

    def __init__(self, step: int, source: str, target: str) -> None:
        self.step, self.source, self.target = step, source, target

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            shutil.copyfile(self.source, self.target)


def _assert_same(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key


def test_resolve_ckpt_path_last(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="hydra.run.dir"):
        resolve_ckpt_path("last", tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert resolve_ckpt_path("last", tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(FileNotFoundError, match="ckpt_path=nope.ckpt"):
        resolve_ckpt_path("nope.ckpt", tmp_path)
    assert resolve_ckpt_path(None, tmp_path) is None


def test_atomic_checkpoint_io_roundtrip_and_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "ckpts" / "last.ckpt"
    io.save_checkpoint({"w": torch.arange(3), "meta": {"epoch": 1}}, path)
    loaded = io.load_checkpoint(path)
    assert torch.equal(loaded["w"], torch.arange(3)) and loaded["meta"] == {"epoch": 1}

    def broken_save(obj: Any, handle: Any) -> None:
        handle.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"w": torch.zeros(1)}, path)
    monkeypatch.undo()
    assert torch.equal(io.load_checkpoint(path)["w"], torch.arange(3))  # old file intact
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # temp file removed


def run_keeping_mid_epoch_checkpoint(tmp_path: Path, overrides: list[str]) -> tuple[dict[str, float], Path]:
    """Train ``overrides`` under ``tmp_path / "a"`` uninterrupted, keeping a copy of the step-``SAVED_STEP``
    last.ckpt: (the run's final metrics, the copy's path)."""
    snapshot = tmp_path / "mid.ckpt"
    cfg = shrink(compose_config("train", overrides), tmp_path / "a")
    with open_dict(cfg):
        cfg.callbacks.copy = {
            "_target_": "tests.test_resume.CopyLastAt",
            "step": SAVED_STEP + 1,
            "source": str(tmp_path / "a" / "run" / "checkpoints" / "last.ckpt"),
            "target": str(snapshot),
        }
    reference = run(cfg)
    GlobalHydra.instance().clear()
    return reference, snapshot


def test_resume_from_mid_epoch_checkpoint_in_process(tmp_path: Path) -> None:
    """Fast variant (no kill): resume from a copy of the step-10 last.ckpt and compare final metrics."""
    reference, snapshot = run_keeping_mid_epoch_checkpoint(tmp_path, RESUME_OVERRIDES)
    state = torch.load(snapshot, weights_only=True)
    assert state["global_step"] == SAVED_STEP and state["epoch"] == 1
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches"] == SAVED_STEP - 8

    cfg = shrink(compose_config("train", [*RESUME_OVERRIDES, f"ckpt_path={snapshot}"]), tmp_path / "b")
    resumed = run(cfg)
    GlobalHydra.instance().clear()
    _assert_same(reference, resumed)


def _train_subprocess(run_dir: Path, data_dir: Path, extra: list[str]) -> subprocess.CompletedProcess:
    overrides = [
        *RESUME_OVERRIDES,
        f"hydra.run.dir={run_dir}",
        f"paths.log_dir={run_dir.parent / 'logs'}",
        f"paths.data_dir={data_dir}",
        f"data.root={data_dir}",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "-m", "rails.train", *overrides],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_sigkill_mid_epoch_then_ckpt_path_last_matches_uninterrupted(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    full = _train_subprocess(tmp_path / "full", data_dir, [])
    assert full.returncode == 0, full.stderr[-3000:]

    killed = _train_subprocess(
        tmp_path / "killed",
        data_dir,
        ["+callbacks.kill._target_=tests.test_resume.KillAt", f"+callbacks.kill.step={SAVED_STEP + 2}"],
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "killed" / "metrics.json").exists()
    state = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == SAVED_STEP

    resumed = _train_subprocess(tmp_path / "killed", data_dir, ["ckpt_path=last"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = json.loads((tmp_path / "full" / "metrics.json").read_text())
    got = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    _assert_same(expected, got)
