"""W&B offline: a tiny run writes the resolved config, metrics, system info and the index table to its run files."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import lightning as L
import pytest
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch.callbacks import Callback
from omegaconf import open_dict

from rails.callbacks.wandb import index_rows
from rails.callbacks.wandb_logger import RailsWandbLogger, resolve_mode
from rails.runs.jobs import finish_wandb
from rails.train import run
from tests.conftest import TINY_OVERRIDES, compose_config, shrink


def read_wandb_records(path: Path) -> list[Any]:
    """Decode the protobuf records of an offline ``run-*.wandb`` file (LevelDB log framing, 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    block, pos, chunk, records = 32768, 7, b"", []  # 7-byte file header (":W&B", version)
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if kind == 0 and length == 0:
            break
        chunk += data[pos : pos + length]
        pos += length
        if kind in (1, 4):  # FULL or LAST fragment
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


class FakeIndexMetrics(Callback):
    """Logs what an approximate index would: recall against exact search and latency."""

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log("val/mol_avg/recall@100", 0.97)
        pl_module.log("val/mol_avg/latency_ms", 1.5)


def test_index_rows_groups_recall_and_latency_by_split_and_index() -> None:
    columns, rows = index_rows(
        {"val/hr@10": 0.3, "val/a/recall@10": 0.9, "val/a/latency_ms": 2.0, "val/b/recall@10": 0.8}
    )
    assert columns == ["split", "index", "latency_ms", "recall@10"]
    assert rows == [["val", "a", 2.0, 0.9], ["val", "b", None, 0.8]]
    assert index_rows({"val/hr@10": 0.3}) == (["split", "index"], [])


def test_mode_auto_is_offline_without_credentials(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("online") == "disabled"
    with pytest.raises(ValueError, match="logger.wandb.mode"):
        RailsWandbLogger(mode="sometimes", save_dir=str(tmp_path))  # type: ignore[arg-type]


def test_offline_run_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    overrides = [o for o in TINY_OVERRIDES if o != "~logger"] + [
        "logger=wandb",
        "logger.wandb.project=rails-test",
        "logger.wandb.group=g1",
        "tags=[unit,wandb]",
        "callbacks.wandb.log_checkpoints=true",
        "trainer.log_every_n_steps=1",
    ]
    cfg = shrink(compose_config("train", overrides), tmp_path)
    with open_dict(cfg):
        cfg.callbacks.fake_index = {"_target_": "tests.test_wandb.FakeIndexMetrics"}
    try:
        metrics = run(cfg)
    finally:
        finish_wandb()  # what `rails-train` does after every job (rails.runs.jobs.run_job)
        GlobalHydra.instance().clear()

    run_dirs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1, run_dirs
    records = read_wandb_records(next(run_dirs[0].glob("run-*.wandb")))
    kinds = [r.WhichOneof("record_type") for r in records]
    assert "exit" in kinds  # the run was finished

    start = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert start.project == "rails-test" and start.run_group == "g1" and list(start.tags) == ["unit", "wandb"]
    config: dict[str, Any] = {}
    for r in records:
        if r.WhichOneof("record_type") in ("run", "config"):
            source = r.run.config if r.WhichOneof("record_type") == "run" else r.config
            for item in source.update:
                key = item.key or "/".join(item.nested_key)
                config[key] = json.loads(item.value_json)
    assert config["model.optimizer.lr"] == pytest.approx(1e-3)
    assert config["data.max_seq_len"] == 20
    assert config["model/params/total"] > 0
    assert config["system.world_size"] == 1 and "system.torch" in config

    summary: dict[str, Any] = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            for item in r.summary.update:
                summary["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
    for key in ("val/ndcg@10", "test/hr@10", "train/loss"):
        assert key in summary, key
    assert summary["test/hr@10"] == pytest.approx(metrics["test/hr@10"])

    tables = list((run_dirs[0] / "files" / "media" / "table").glob("val/retrieval_indexes_*.table.json"))
    assert tables, list((run_dirs[0] / "files").rglob("*"))
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["split", "index", "latency_ms", "recall@100"]
    assert table["data"][0][:2] == ["val", "mol_avg"] and table["data"][0][3] == pytest.approx(0.97)
    assert any(r.WhichOneof("record_type") == "artifact" and r.artifact.type == "model" for r in records)
