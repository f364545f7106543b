"""Checkpoints never run code: malicious, empty, truncated, random and mismatched files are refused by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from rails.eval import evaluate, load_checkpoint
from rails.runs.checkpoints import AtomicCheckpointIO, CheckpointError, load_checkpoint_file
from rails.train import run
from tests.conftest import REPO_ROOT, TINY_OVERRIDES, compose_config, shrink


class Payload:
    """Unpickling this object creates ``marker`` (stands for any code an attacker hides in a pickle)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(self.marker),))


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ``rails-train`` checkpoint of a tiny one-epoch run."""
    tmp_path = tmp_path_factory.mktemp("trained")
    run(shrink(compose_config("train", [*TINY_OVERRIDES, "test=false"]), tmp_path))
    GlobalHydra.instance().clear()
    return next((tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt"))


def _malicious_copy(checkpoint: Path, target: Path, marker: Path) -> Path:
    """The real checkpoint with one extra pickled object whose unpickling runs code."""
    state = torch.load(checkpoint, weights_only=True)
    state["extra"] = Payload(marker)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, target)
    return target


def _eval_cfg(ckpt: Path, tmp_path: Path):
    cfg = shrink(compose_config("eval", [f"ckpt_path={ckpt}", "trainer.accelerator=cpu"]), tmp_path / "eval")
    with open_dict(cfg):
        cfg.trainer.enable_progress_bar = False
    return cfg


def test_train_refuses_checkpoint_with_hidden_code(trained_checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    evil = _malicious_copy(trained_checkpoint, tmp_path / "evil.ckpt", marker)
    cfg = shrink(compose_config("train", [*TINY_OVERRIDES, f"ckpt_path={evil}"]), tmp_path / "resume")
    with pytest.raises(CheckpointError, match=r"evil\.ckpt refused: .*weights_only=True"):
        run(cfg)
    GlobalHydra.instance().clear()
    assert not marker.exists(), "the pickled payload ran"


def test_train_refuses_planted_last_ckpt(trained_checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    cfg = shrink(compose_config("train", [*TINY_OVERRIDES, "ckpt_path=last"]), tmp_path / "planted")
    _malicious_copy(trained_checkpoint, Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", marker)
    with pytest.raises(CheckpointError, match=r"last\.ckpt refused"):
        run(cfg)
    GlobalHydra.instance().clear()
    assert not marker.exists(), "the pickled payload ran"


def test_eval_refuses_checkpoint_with_hidden_code(trained_checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    evil = _malicious_copy(trained_checkpoint, tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError, match=r"evil\.ckpt refused"):
        evaluate(_eval_cfg(evil, tmp_path))
    GlobalHydra.instance().clear()
    assert not marker.exists(), "the pickled payload ran"


def test_rails_eval_cli_refuses_without_running_payload(trained_checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    evil = _malicious_copy(trained_checkpoint, tmp_path / "evil.ckpt", marker)
    result = subprocess.run(
        [sys.executable, "-m", "rails.eval", f"ckpt_path={evil}", "trainer.accelerator=cpu",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )  # fmt: skip
    assert result.returncode != 0
    assert "evil.ckpt refused" in result.stderr + result.stdout
    assert not marker.exists(), "the pickled payload ran"


def test_checkpoint_io_never_unpickles_fully(trained_checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    evil = _malicious_copy(trained_checkpoint, tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError, match="refused"):
        AtomicCheckpointIO().load_checkpoint(evil, weights_only=False)
    assert not marker.exists()
    assert "state_dict" in AtomicCheckpointIO().load_checkpoint(trained_checkpoint, weights_only=False)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty"),
        (bytes(range(7, 255)) * 16, "not a torch checkpoint"),
        (b"\x80\x04\x95", "truncated or corrupt pickle"),
    ],
    ids=["empty", "random", "cut-pickle"],
)
def test_unreadable_files_are_named(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected) as info:
        load_checkpoint_file(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_truncated_checkpoint_is_named(trained_checkpoint: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.ckpt"
    data = trained_checkpoint.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.ckpt .*cannot be read: a truncated torch checkpoint"):
        load_checkpoint(path)


def test_non_dict_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.ckpt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="expected a dictionary"):
        load_checkpoint_file(path)


def test_eval_names_config_weight_mismatch(trained_checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(trained_checkpoint, weights_only=True)
    state["rails_config"]["model"]["encoder"]["num_blocks"] += (
        1  # the stored config no longer fits the weights
    )
    edited = tmp_path / "edited.ckpt"
    torch.save(state, edited)
    with pytest.raises(CheckpointError, match=r"edited\.ckpt does not fit the model .* missing weight"):
        evaluate(_eval_cfg(edited, tmp_path))
    GlobalHydra.instance().clear()


def test_train_names_resume_mismatch(trained_checkpoint: Path, tmp_path: Path) -> None:
    overrides = [*TINY_OVERRIDES, "model.item_dim=24", f"ckpt_path={trained_checkpoint}"]
    cfg = shrink(compose_config("train", overrides), tmp_path / "resume")
    with pytest.raises(CheckpointError, match="does not fit the model built from the config"):
        run(cfg)
    GlobalHydra.instance().clear()


def test_eval_names_the_override_for_an_outdated_evaluator(trained_checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(trained_checkpoint, weights_only=True)
    state["rails_config"]["retrieval"]["evaluator"]["_target_"] = (
        "rails.retrieval.callback.RetrievalEvaluator"
    )
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    with pytest.raises(ValueError, match="pass retrieval=default"):
        evaluate(_eval_cfg(old, tmp_path))
    GlobalHydra.instance().clear()
