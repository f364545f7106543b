"""The dataset configs compose and instantiate; ML-100K trains end to end on the real shared files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hydra
import pytest
from hydra.core.global_hydra import GlobalHydra

from rails.config import check_config
from rails.datamodules.amazon import AmazonBooks
from rails.datamodules.movielens import MovieLens1M, MovieLens20M, MovieLens100K
from rails.train import run
from tests.conftest import REPO_ROOT, compose_config, shrink


@pytest.mark.parametrize(
    ("option", "source_cls", "max_seq_len"),
    [
        ("ml_1m", MovieLens1M, 200),
        ("ml_20m", MovieLens20M, 200),
        ("ml_100k", MovieLens100K, 200),
        ("amzn_books", AmazonBooks, 50),
    ],
)
def test_dataset_config_composes_and_instantiates(option: str, source_cls: type, max_seq_len: int) -> None:
    cfg = compose_config("train", [f"data={option}", "data.root=/nonexistent"])
    GlobalHydra.instance().clear()
    check_config(cfg.data)
    datamodule = hydra.utils.instantiate(cfg.data)  # nothing is read or downloaded before prepare_data
    assert isinstance(datamodule.source, source_cls)
    assert datamodule.source.verify_statistics and datamodule.source.download
    assert (datamodule.max_seq_len, datamodule.batch_size, datamodule.eval_batch_size) == (
        max_seq_len,
        128,
        128,
    )


def test_ml100k_real_one_epoch_training(shared_data_dir: Path, tmp_path: Path) -> None:
    overrides = [
        "data=ml_100k",
        "data.max_seq_len=20",
        "data.batch_size=256",
        "data.eval_batch_size=512",
        f"data.source.raw_dir={shared_data_dir / 'ml-100k'}",
        "model.item_dim=8",
        "model.encoder.num_blocks=1",
        "model.negatives.num_negatives=8",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "~callbacks.progress_bar",
        "~logger",
    ]
    cfg = shrink(compose_config("train", overrides), tmp_path)
    metrics = run(cfg)
    GlobalHydra.instance().clear()
    assert 0.0 <= metrics["test/hr@10"] <= 1.0
    prepared = [p for p in (tmp_path / "data").iterdir() if p.name.startswith("ml-100k-")]
    assert len(prepared) == 1  # verified statistics, written under data.root (not the shared folder)


def test_prepare_data_cli(shared_data_dir: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "prepare_data.py"),
            "ml_100k",
            "--root",
            str(tmp_path),
            "--raw-dir",
            str(shared_data_dir / "ml-100k"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "users 943, interactions 100,000" in out.stdout + out.stderr
    bad = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "prepare_data.py"),
            "ml_1m",
            "--root",
            str(tmp_path / "x"),
        ]
        + ["--raw-dir", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "missing/ratings.dat" in bad.stderr and "Traceback" not in bad.stderr


def test_prepare_data_cli_takes_every_dataset_config(tmp_path: Path) -> None:
    items = tmp_path / "items.txt"
    items.write_text("1 2 3 4\n2 3 4 5\n3 4 5 6\n")
    script = str(REPO_ROOT / "scripts" / "prepare_data.py")
    command = [
        sys.executable,
        script,
        "sequences",
        "--root",
        str(tmp_path / "root"),
        f"data.source.items_file={items}",
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    prepared = Path(out.stdout.strip().splitlines()[-1])
    assert prepared.parent == tmp_path / "root" and prepared.name.startswith("sequences-")
    assert (prepared / "sequences.parquet").is_file()
    bad = subprocess.run(
        command[:3] + ["--raw-file", str(items)], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 1 and "--raw-file does not apply to sequences" in bad.stderr
    assert "Traceback" not in bad.stderr
