"""Sweeps: config composition, failed jobs scored NaN, the end-of-sweep summary, and real CPU sweeps (slow)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from rails.callbacks.summary import SweepSummary, best_job, collect_jobs
from rails.config_dir import config_dir
from rails.utils.instantiate import check_config
from rails.utils.task import run_job
from tests.conftest import REPO_ROOT, TINY_OVERRIDES, compose_config, shrink


def test_optuna_search_space_composes() -> None:
    cfg = compose_config("train", ["hparams_search=optuna"])
    GlobalHydra.instance().clear()
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert cfg.optimized_metric == "val/ndcg@10" and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert set(sweeper.params) == {
        "model.optimizer.lr",
        "model.negatives.num_negatives",
        "model.encoder.dropout",
    }
    check_config(cfg)


def test_mol_search_space_composes() -> None:
    if not (Path(config_dir()) / "model" / "similarity" / "mol.yaml").is_file():
        pytest.skip("model/similarity/mol.yaml is not there yet (MoL head issue)")
    cfg = compose_config("train", ["hparams_search=mol_optuna"])
    GlobalHydra.instance().clear()
    assert "model.similarity.num_query_components" in cfg.hydra.sweeper.params
    assert "model.similarity.num_item_components" in cfg.hydra.sweeper.params
    check_config(cfg)


def test_slurm_launcher_config_composes() -> None:
    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        pytest.skip("hydra-submitit-launcher is not installed (optional extra `sweep`)")
    cfg = compose_config("train", ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4"])
    GlobalHydra.instance().clear()
    assert cfg.hydra.launcher.tasks_per_node == 4 and cfg.hydra.launcher.gpus_per_node == 4


@pytest.mark.parametrize("trainer", ["ddp", "ddp_sim"])
def test_ddp_trainer_configs_compose_and_build_their_strategy(trainer: str, tmp_path: Path) -> None:
    cfg = shrink(compose_config("train", [f"trainer={trainer}"]), tmp_path)
    check_config(cfg)
    strategy = hydra.utils.instantiate(cfg.trainer.strategy)
    GlobalHydra.instance().clear()
    assert strategy._process_group_backend == ("nccl" if trainer == "ddp" else "gloo")
    assert cfg.trainer.precision == ("bf16-mixed" if trainer == "ddp" else "32-true")


def _set_mode(cfg, mode: str):  # noqa: ANN001, ANN202
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.mode = mode
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_failed_sweep_job_scores_nan_and_writes_its_traceback(tmp_path: Path) -> None:
    cfg = _set_mode(shrink(compose_config("train", TINY_OVERRIDES), tmp_path), "MULTIRUN")

    def boom(_cfg):  # noqa: ANN001, ANN202
        raise RuntimeError("out of memory (simulated)")

    value = run_job(boom, cfg)
    assert math.isnan(value)
    assert "out of memory (simulated)" in (tmp_path / "run" / "error.txt").read_text()
    assert run_job(lambda _cfg: {"val/ndcg@10": 0.25}, cfg) == 0.25
    assert math.isnan(run_job(lambda _cfg: {"val/hr@10": 0.25}, cfg))  # optimized metric missing
    _set_mode(cfg, "RUN")
    with pytest.raises(RuntimeError, match="simulated"):  # a single run fails loudly
        run_job(boom, cfg)
    GlobalHydra.instance().clear()


def _fake_job(
    sweep: Path, num: int, overrides: list[str], metrics: dict | None, failed: bool = False
) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if failed:
        (job / "error.txt").write_text("Traceback ...")


def test_sweep_summary_picks_the_best_trial(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "sweep"
    _fake_job(sweep, 0, ["lr=0.001"], {"val/ndcg@10": 0.20, "test/hr@10": 0.3})
    _fake_job(sweep, 1, ["lr=0.01"], {"val/ndcg@10": 0.31, "test/hr@10": 0.4})
    _fake_job(sweep, 2, ["lr=10"], None, failed=True)
    _fake_job(sweep, 10, ["lr=0.1"], {"val/ndcg@10": None})  # NaN written as null
    jobs = collect_jobs(sweep)
    assert [j["job"] for j in jobs] == ["0", "1", "2", "10"]
    assert [j["status"] for j in jobs] == ["ok", "ok", "failed", "ok"]
    assert best_job(jobs, "val/ndcg@10", "max")["job"] == "1"
    assert best_job(jobs, "val/ndcg@10", "min")["job"] == "0"

    SweepSummary(metric="val/ndcg@10").on_multirun_end(
        OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    )
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["best"]["overrides"] == ["lr=0.01"] and summary["best"]["metrics"]["test/hr@10"] == 0.4
    assert (sweep / "summary.csv").read_text().splitlines()[0].startswith("job,status,overrides")
    out = capsys.readouterr().out
    assert "best: job 1" in out and "failed" in out


@pytest.mark.parametrize(
    ("app", "overrides", "metric"),
    [
        ("train", [], "val/ndcg@10"),
        ("eval", ["ckpt_path=x"], "val/ndcg@10"),
        ("train", ["optimized_metric=val/hr@10"], "val/hr@10"),
    ],
)
def test_hydra_callbacks_instantiate_for_both_apps(app: str, overrides: list[str], metric: str) -> None:
    cfg = compose_config(app, overrides)
    GlobalHydra.instance().clear()
    summary = hydra.utils.instantiate(cfg.hydra.callbacks.summary)
    assert isinstance(summary, SweepSummary) and summary.metric == metric


def test_sweep_summary_rejects_bad_mode() -> None:
    with pytest.raises(ValueError, match="hydra.callbacks.summary.mode"):
        SweepSummary(mode="best")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ slow
def _rails_train(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    paths = [
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"data.root={tmp_path / 'data'}",
    ]
    return subprocess.run(
        [sys.executable, "-m", "rails.train", *args, *paths],
        cwd=REPO_ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=1200,
    )


def _single_sweep(tmp_path: Path) -> Path:
    sweeps = list((tmp_path / "logs" / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


@pytest.mark.slow
def test_basic_multirun_survives_a_failing_job(tmp_path: Path) -> None:
    # lr=-1 makes AdamW raise in job 1; job 0 and the sweep itself must complete.
    result = _rails_train(
        ["-m", "model.optimizer.lr=0.001,-1", *TINY_OVERRIDES], tmp_path, WANDB_MODE="disabled"
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((_single_sweep(tmp_path) / "summary.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["ok", "failed"]
    assert summary["best"]["job"] == "0"
    assert "Invalid learning rate" in (_single_sweep(tmp_path) / "1" / "error.txt").read_text()


@pytest.mark.slow
def test_optuna_sweep_of_four_trials_with_wandb_offline(tmp_path: Path) -> None:
    overrides = [o for o in TINY_OVERRIDES if o != "~logger"]
    result = _rails_train(
        [
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.sampler.n_startup_trials=2",
            "logger=wandb",
            *overrides,
        ],
        tmp_path,
        WANDB_MODE="offline",
        WANDB_SILENT="true",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    sweep = _single_sweep(tmp_path)
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    summary = json.loads((sweep / "summary.json").read_text())
    assert len(summary["jobs"]) == 4 and all(j["status"] == "ok" for j in summary["jobs"])
    assert summary["best"]["metrics"]["val/ndcg@10"] == pytest.approx(best.best_value)
    wandb_runs = sorted(sweep.glob("*/wandb/offline-run-*"))
    assert len(wandb_runs) == 4
