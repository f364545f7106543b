"""Inference-only checkpoints (scripts/strip_checkpoint.py): same weights and metrics, no training state, no resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from rails.retrieval.benchmark_checkpoint import checkpoint_head
from rails.runs.checkpoints import (
    INFERENCE_ONLY_KEY,
    TRAINING_STATE_KEYS,
    CheckpointError,
    load_checkpoint_file,
    write_inference_checkpoint,
)
from rails.runs.rebuild import trained_test_queries
from rails.train import run
from tests.conftest import (
    REPO_ROOT,
    TINY_OVERRIDES,
    compose_config,
    eval_checkpoint,
    shrink,
    train_tiny_checkpoint,
)


@pytest.fixture(scope="module")
def mol_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ``rails-train`` checkpoint of a tiny one-epoch MoL run."""
    overrides = ["model/similarity=mol", "model.similarity.uid_hash_sizes=[]"]
    return train_tiny_checkpoint(tmp_path_factory.mktemp("trained"), overrides)


def test_inference_copy_keeps_weights_and_config_only(mol_checkpoint: Path, tmp_path: Path) -> None:
    original = load_checkpoint_file(mol_checkpoint)
    assert set(TRAINING_STATE_KEYS) & set(original), "the fixture should hold training state to drop"
    slim_path = tmp_path / "nested" / "slim.ckpt"
    slim_path.parent.mkdir()
    write_inference_checkpoint(mol_checkpoint, slim_path)
    slim = load_checkpoint_file(slim_path)
    assert not set(TRAINING_STATE_KEYS) & set(slim)
    assert slim[INFERENCE_ONLY_KEY] is True
    assert slim["rails_config"] == original["rails_config"]
    assert slim["state_dict"].keys() == original["state_dict"].keys()
    for name, tensor in original["state_dict"].items():
        assert torch.equal(slim["state_dict"][name], tensor), name
    assert slim_path.stat().st_size < mol_checkpoint.stat().st_size
    assert not list(slim_path.parent.glob("*.tmp*")), "atomic write left a temporary file"


def test_inference_copy_evaluates_and_searches_like_the_original(
    mol_checkpoint: Path, tmp_path: Path
) -> None:
    slim_path = tmp_path / "slim.ckpt"
    write_inference_checkpoint(mol_checkpoint, slim_path)
    original = eval_checkpoint(mol_checkpoint, tmp_path / "eval-original")
    slim = eval_checkpoint(slim_path, tmp_path / "eval-slim")
    assert "test/ndcg@10" in original
    assert slim.keys() == original.keys()
    for name, value in original.items():
        assert slim[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    head = checkpoint_head(load_checkpoint_file(slim_path), str(slim_path))  # the top-k benchmark's reader
    stored = load_checkpoint_file(mol_checkpoint)["state_dict"]
    for name, tensor in head.state_dict().items():
        assert torch.equal(tensor, stored[f"similarity.{name}"]), name


def test_training_refuses_to_resume_from_an_inference_copy(mol_checkpoint: Path, tmp_path: Path) -> None:
    slim_path = tmp_path / "slim.ckpt"
    write_inference_checkpoint(mol_checkpoint, slim_path)
    overrides = [
        *TINY_OVERRIDES,
        "model/similarity=mol",
        "model.similarity.uid_hash_sizes=[]",
        f"ckpt_path={slim_path}",
    ]
    cfg = shrink(compose_config("train", overrides), tmp_path / "resume")
    with pytest.raises(
        CheckpointError, match=r"slim\.ckpt: an inference-only checkpoint .*rails-eval ckpt_path="
    ):
        run(cfg)
    GlobalHydra.instance().clear()


def test_foreign_file_is_refused_by_name(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointError, match=r"foreign\.ckpt: not written by rails-train .*rails_config"):
        write_inference_checkpoint(foreign, tmp_path / "out.ckpt")
    assert not (tmp_path / "out.ckpt").exists()


def test_strip_checkpoint_script(mol_checkpoint: Path, tmp_path: Path) -> None:
    script = REPO_ROOT / "scripts" / "strip_checkpoint.py"
    done = subprocess.run(
        [sys.executable, str(script), str(mol_checkpoint), str(tmp_path / "slim.ckpt")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "MiB) ->" in done.stdout and (tmp_path / "slim.ckpt").is_file()
    missing = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "none.ckpt"), str(tmp_path / "x.ckpt")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode != 0 and "none.ckpt: no such file" in missing.stderr


def test_inference_copy_rebuilds_the_runs_test_queries(mol_checkpoint: Path, tmp_path: Path) -> None:
    """The top-k benchmark's queries (the encoder over the run's test users) come out the same from the copy."""
    slim_path = tmp_path / "slim.ckpt"
    write_inference_checkpoint(mol_checkpoint, slim_path)
    original = load_checkpoint_file(mol_checkpoint)
    root = str(original["rails_config"]["data"]["root"])
    queries, users = trained_test_queries(original, root, 8, "cpu", "original")
    slim_queries, slim_users = trained_test_queries(load_checkpoint_file(slim_path), root, 8, "cpu", "slim")
    assert torch.equal(slim_users, users)
    torch.testing.assert_close(slim_queries, queries)
