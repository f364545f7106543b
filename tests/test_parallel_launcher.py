"""Parallel sweeps (``hydra/launcher=parallel``): jobs at once in worker processes, one console file each."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from rails.callbacks.job_console import JOBLIB_LAUNCHER, JobConsoleToFile
from tests.conftest import REPO_ROOT, TINY_OVERRIDES, compose_config


def _job_config(output_dir: Path, launcher: str = JOBLIB_LAUNCHER) -> DictConfig:
    return OmegaConf.create(
        {
            "hydra": {
                "launcher": {"_target_": launcher},
                "runtime": {"output_dir": str(output_dir)},
                "overrides": {"task": ["seed=3"]},
                "job": {"num": 7},
            }
        }
    )


# A stand-in for a joblib worker: a new interpreter that unpickles the callback built here and runs one job
# per config around it (output at the file descriptor level too, as C/C++ code writes).
WORKER = """
import os, pickle, sys
from hydra.core.utils import JobReturn, JobStatus
callback, configs = pickle.load(sys.stdin.buffer)
for config in configs:
    callback.on_job_start(config=config)
    print("inside the job", flush=True)
    os.write(2, b"stderr of the job\\n")
    callback.on_job_end(config=config, job_return=JobReturn(status=JobStatus.COMPLETED))
    print("after the job", flush=True)
"""


def _in_worker_process(callback: JobConsoleToFile, configs: list[DictConfig]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-c", WORKER],
        input=pickle.dumps((callback, configs)),
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()[-4000:]
    return result


def test_parallel_launcher_config_composes() -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="hydra-joblib-launcher (extra `sweep`)")
    cfg = compose_config("train", ["hydra/launcher=parallel", "hydra.launcher.n_jobs=8"])
    assert cfg.hydra.launcher._target_ == JOBLIB_LAUNCHER and cfg.hydra.launcher.n_jobs == 8
    assert cfg.hydra.callbacks.job_console._target_ == "rails.callbacks.job_console.JobConsoleToFile"


def test_job_console_redirects_a_joblib_worker_only(tmp_path: Path) -> None:
    callback = JobConsoleToFile()
    callback.on_job_start(config=_job_config(tmp_path / "same_process"))  # basic launcher / single run
    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    configs = [_job_config(tmp_path / "other_launcher", basic), _job_config(tmp_path / "joblib")]
    result = _in_worker_process(callback, configs)
    assert [p.parent.name for p in tmp_path.rglob("console.log")] == ["joblib"]
    text = (tmp_path / "joblib" / "console.log").read_text()
    assert re.match(r"\[[-0-9: ]+\] job 7 started \(pid \d+\): seed=3\n", text), text
    assert "inside the job\nstderr of the job\n" in text and text.endswith("job 7 ended: COMPLETED\n")
    # The worker's own stdout and stderr are back after the job: the second job printed only there.
    assert result.stdout.decode() == "inside the job\nafter the job\nafter the job\n"
    assert result.stderr.decode() == "stderr of the job\n"


def test_job_console_rejects_a_path_as_file_name() -> None:
    with pytest.raises(ValueError, match="job_console.filename"):
        JobConsoleToFile(filename="../console.log")


@pytest.mark.slow
def test_parallel_sweep_runs_jobs_in_two_workers_and_survives_a_failing_job(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="hydra-joblib-launcher (extra `sweep`)")
    paths = [
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"data.root={tmp_path / 'data'}",
    ]
    # lr=-1 makes AdamW raise in job 2, which runs in a worker that already ran job 0 or 1.
    args = ["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "model.optimizer.lr=1e-3,2e-3,-1"]
    result = subprocess.run(
        [sys.executable, "-m", "rails.train", *args, *TINY_OVERRIDES, *paths],
        cwd=REPO_ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    summary = json.loads((sweep / "summary.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["ok", "ok", "failed"]
    assert "rails: train" not in result.stdout + result.stderr  # the jobs' metrics tables: in their files
    pids = {}
    for job in ("0", "1", "2"):
        console = (sweep / job / "console.log").read_text()
        starts = re.findall(r"\] job (\d+) started \(pid (\d+)\)", console)
        assert [num for num, _ in starts] == [job], console[:2000]  # its own output only
        pids[job] = starts[0][1]
        assert (sweep / job / "train.log").is_file()
    for job in ("0", "1"):
        assert set(json.loads((sweep / job / "metrics.json").read_text())) >= {"val/ndcg@10", "test/hr@10"}
        console = (sweep / job / "console.log").read_text()
        assert "rails: train" in console and "Invalid learning rate" not in console  # its metrics table
        assert console.rstrip().endswith(f"job {job} ended: COMPLETED")
    assert "Invalid learning rate" in (sweep / "2" / "error.txt").read_text()
    assert (sweep / "2" / "console.log").read_text().rstrip().endswith("job 2 ended: FAILED (error.txt)")
    assert pids["0"] != pids["1"] and pids["2"] in (pids["0"], pids["1"])  # two workers, reused
