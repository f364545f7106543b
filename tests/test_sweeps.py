"""Sweeps: config composition, failed jobs as failed trials, the end-of-sweep summary, real CPU sweeps (slow)."""

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
from rails.config import check_config, config_dir
from rails.runs.jobs import FailedTrial, run_job
from tests.conftest import REPO_ROOT, TINY_OVERRIDES, compose_config, shrink


def test_optuna_search_space_composes() -> None:
    cfg = compose_config("train", ["hparams_search=optuna"])
    GlobalHydra.instance().clear()
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.rails_sweepers.optuna_sweeper.RailsOptunaSweeper"
    assert sweeper.direction == "maximize"
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
    assert "model.similarity.mi_loss_weight" in cfg.hydra.sweeper.params
    assert "model.dot_loss_weight" in cfg.hydra.sweeper.params  # the Beauty lever (mol_investigation §0.12)
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


def test_failed_sweep_job_is_a_failed_trial_and_writes_its_traceback(tmp_path: Path) -> None:
    cfg = _set_mode(shrink(compose_config("train", TINY_OVERRIDES), tmp_path), "MULTIRUN")
    error_file = tmp_path / "run" / "error.txt"

    def boom(_cfg):  # noqa: ANN001, ANN202
        raise RuntimeError("out of memory (simulated)")

    value = run_job(boom, cfg)
    assert isinstance(value, FailedTrial) and "out of memory (simulated)" in str(value)
    with pytest.raises(ValueError, match="out of memory"):  # how hydra-optuna-sweeper learns it failed
        float(value)
    assert "out of memory (simulated)" in error_file.read_text()
    error_file.unlink()
    assert run_job(lambda _cfg: {"val/ndcg@10": 0.25}, cfg) == 0.25
    assert not error_file.exists()
    missing = run_job(lambda _cfg: {"val/hr@10": 0.25}, cfg)  # optimized metric missing
    assert isinstance(missing, FailedTrial) and "not computed" in error_file.read_text()
    not_finite = run_job(lambda _cfg: {"val/ndcg@10": math.nan}, cfg)  # a diverged run
    assert isinstance(not_finite, FailedTrial) and "nan" in str(not_finite)
    _set_mode(cfg, "RUN")
    with pytest.raises(RuntimeError, match="simulated"):  # a single run fails loudly
        run_job(boom, cfg)
    GlobalHydra.instance().clear()


def test_config_is_checked_before_the_job_runs(tmp_path: Path) -> None:
    cfg = _set_mode(shrink(compose_config("train", [*TINY_OVERRIDES, "seed=abc"]), tmp_path), "MULTIRUN")
    ran = []
    value = run_job(lambda _cfg: ran.append(1) or {"val/ndcg@10": 0.5}, cfg)
    GlobalHydra.instance().clear()
    assert not ran and isinstance(value, FailedTrial) and "seed" in str(value)


def test_rails_optuna_sweeper_is_a_hydra_plugin() -> None:
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    names = {f"{p.__module__}.{p.__name__}" for p in Plugins.instance().discover(Sweeper)}
    assert "hydra_plugins.rails_sweepers.optuna_sweeper.RailsOptunaSweeper" in names


SWEEP_APP = """
import json

import hydra
import optuna
from hydra.core.hydra_config import HydraConfig
from rails.runs.jobs import run_job


class RecordingSampler(optuna.samplers.RandomSampler):
    \"\"\"Writes what the sweeper told Optuna about each trial to told.txt (public sampler hook).\"\"\"

    def after_trial(self, study, trial, state, values):
        with open("told.txt", "a") as handle:
            handle.write(f"{trial.number}:{state.name}\\n")
        super().after_trial(study, trial, state, values)


def task(cfg):
    if HydraConfig.get().job.num in cfg.failing:
        raise RuntimeError("this trial fails (simulated)")
    metrics = {"val/score": cfg.x}
    with open(f"{cfg.paths.output_dir}/metrics.json", "w") as handle:  # as rails-train does
        json.dump(metrics, handle)
    return metrics


@hydra.main(version_base="1.3", config_path=".", config_name="app")
def main(cfg):
    return run_job(task, cfg)


main()
"""

SWEEP_CONFIG = """
defaults:
  - override hydra/sweeper: optuna
  - override hydra/sweeper/sampler: random
  - _self_
x: 0.0
failing: []
optimized_metric: val/score
paths:
  output_dir: ${hydra:runtime.output_dir}
hydra:
  mode: MULTIRUN
  sweep:
    dir: sweep
  sweeper:
    _target_: hydra_plugins.rails_sweepers.optuna_sweeper.RailsOptunaSweeper
    direction: maximize
    n_trials: 3
    n_jobs: 1
    max_failure_rate: 0.0
    sampler:
      _target_: __main__.RecordingSampler
      seed: 0
    params:
      x: interval(0.0, 1.0)
  callbacks:
    summary:
      _target_: rails.callbacks.summary.SweepSummary
      metric: val/score
"""


def _sweep_app(tmp_path: Path, failing: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """A 3-trial Optuna sweep whose jobs ``failing`` raise (no training); returns the run and what Optuna was told."""
    (tmp_path / "app.py").write_text(SWEEP_APP)
    (tmp_path / "app.yaml").write_text(SWEEP_CONFIG)
    result = subprocess.run(
        [sys.executable, "app.py", f"failing={failing}"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    told = tmp_path / "told.txt"
    return result, told.read_text().split() if told.is_file() else []


def test_optuna_sweeper_tells_failed_trials_as_failed_and_goes_on(tmp_path: Path) -> None:
    result, told = _sweep_app(tmp_path, "[1]")
    assert result.returncode == 0, result.stderr[-4000:]
    assert told == ["0:COMPLETE", "1:FAIL", "2:COMPLETE"]  # even with max_failure_rate 0
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["ok", "failed", "ok"]
    best = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert summary["best"]["metrics"]["val/score"] == pytest.approx(best.best_value)
    assert "this trial fails (simulated)" in (tmp_path / "sweep" / "1" / "error.txt").read_text()


def test_optuna_sweep_in_which_every_trial_fails_still_writes_its_summary(tmp_path: Path) -> None:
    result, told = _sweep_app(tmp_path, "[0,1,2]")
    assert result.returncode == 0, result.stderr[-4000:]
    assert told == ["0:FAIL", "1:FAIL", "2:FAIL"]
    assert "every trial of the sweep failed" in result.stderr + result.stdout
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert summary["best"] is None and [j["status"] for j in summary["jobs"]] == ["failed"] * 3


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
    assert summary["jobs"][2]["error"] == "Traceback ..." and "job 2 failed: Traceback ..." in out
    assert summary["jobs"][0]["error"] is None


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


# Job 0 of a sweep gets model.encoder.num_blocks=0, which the config check rejects: the forced failing trial.
FAIL_FIRST_JOB = "model.encoder.num_blocks=${hydra:job.num}"


def _check_sweep_with_failed_first_trial(
    result: subprocess.CompletedProcess, tmp_path: Path, trials: int
) -> Path:
    assert result.returncode == 0, result.stderr[-4000:]
    sweep = _single_sweep(tmp_path)
    summary = json.loads((sweep / "summary.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["failed"] + ["ok"] * (trials - 1)
    assert "model.encoder.num_blocks=0: must be >= 1" in summary["jobs"][0]["error"]
    told_fail = "Failed experiment: Return value must be float-castable"  # the plugin told Optuna FAIL
    assert told_fail in result.stderr + result.stdout
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert summary["best"]["metrics"]["val/ndcg@10"] == pytest.approx(best.best_value)
    assert summary["best"]["job"] != "0"
    return sweep


@pytest.mark.slow
def test_optuna_sweep_with_a_failing_trial_and_wandb_offline(tmp_path: Path) -> None:
    overrides = [o for o in TINY_OVERRIDES if o != "~logger"]
    result = _rails_train(
        [
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.sampler.n_startup_trials=2",
            "logger=wandb",
            *overrides,
            FAIL_FIRST_JOB,
        ],
        tmp_path,
        WANDB_MODE="offline",
        WANDB_SILENT="true",
    )
    sweep = _check_sweep_with_failed_first_trial(result, tmp_path, trials=3)
    assert len(sorted(sweep.glob("[12]/wandb/offline-run-*"))) == 2


@pytest.mark.slow
def test_mol_optuna_sweep_runs_end_to_end(tmp_path: Path) -> None:
    """hparams_search=mol_optuna with nothing but tiny sizes: MoL brings its own recipe, trials train."""
    result = _rails_train(
        [
            "hparams_search=mol_optuna",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.sampler.n_startup_trials=2",
            *TINY_OVERRIDES,
            "model.similarity.component_dim=8",
            "model.similarity.query_hidden_dim=16",
            FAIL_FIRST_JOB,
        ],
        tmp_path,
        WANDB_MODE="disabled",
    )
    sweep = _check_sweep_with_failed_first_trial(result, tmp_path, trials=3)
    config = OmegaConf.load(sweep / "1" / ".hydra" / "config.yaml")
    assert config.model.similarity._target_.endswith("MoLSimilarity")
