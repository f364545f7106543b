"""Distributed evaluation gives single-device metrics; DDP under Hydra (-m too) keeps one run directory per job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from rails.datamodules.samplers import ResumableDataLoader, ResumableRandomSampler, ShardedEvalSampler
from rails.eval import evaluate
from rails.runs import ddp
from tests.conftest import REPO_ROOT, TINY_OVERRIDES, compose_config, shrink


@pytest.mark.parametrize("n", [0, 1, 7, 10, 121])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_sharded_eval_sampler_covers_each_index_exactly_once(n: int, world: int) -> None:
    shards = [list(ShardedEvalSampler(range(n), num_replicas=world, rank=r)) for r in range(world)]
    assert sorted(i for shard in shards for i in shard) == list(range(n))
    assert [len(ShardedEvalSampler(range(n), num_replicas=world, rank=r)) for r in range(world)] == [
        len(s) for s in shards
    ]


def test_sampler_rejects_bad_rank() -> None:
    with pytest.raises(ValueError, match="invalid rank 2 for world size 2"):
        ShardedEvalSampler(range(4), num_replicas=2, rank=2)


def test_resumable_sampler_is_a_seeded_epoch_keyed_shard() -> None:
    def shards(epoch: int, seed: int = 3) -> list[list[int]]:
        out = []
        for rank in range(2):
            sampler = ResumableRandomSampler(range(11), num_replicas=2, rank=rank, seed=seed)
            sampler.set_epoch(epoch)
            out.append(list(sampler))
        return out

    epoch0 = shards(0)
    assert epoch0 == shards(0)  # reproducible
    assert epoch0 != shards(1) and epoch0 != shards(0, seed=4)
    assert len(epoch0[0]) == len(epoch0[1]) == 6  # padded to a multiple of the world size
    assert set(epoch0[0]) | set(epoch0[1]) == set(range(11))


def test_resumable_loader_state_roundtrip_continues_with_the_next_batch() -> None:
    data = list(range(23))

    def loader() -> ResumableDataLoader:
        return ResumableDataLoader(data, ResumableRandomSampler(data, seed=5), batch_size=4)

    full = loader()
    full.sampler.set_epoch(2)
    expected = [b.tolist() for b in full]

    first = loader()
    first.sampler.set_epoch(2)
    iterator = iter(first)
    seen = [next(iterator).tolist() for _ in range(3)]
    state = first.state_dict()
    assert state == {"epoch": 2, "seed": 5, "batches": 3}

    second = loader()
    second.load_state_dict(state)
    second.sampler.set_epoch(2)  # what Lightning does before iterating: must keep the offset
    rest = [b.tolist() for b in second]
    assert seen + rest == expected
    assert second.state_dict()["batches"] == len(expected)
    second.sampler.set_epoch(3)  # a new epoch starts from the beginning
    assert len(list(second)) == len(expected)

    other_seed = ResumableDataLoader(data, ResumableRandomSampler(data, seed=6), batch_size=4)
    other_seed.load_state_dict(state)  # the stored shuffle wins
    other_seed.sampler.set_epoch(2)
    assert [b.tolist() for b in other_seed] == rest


def test_child_command_runs_the_current_job_not_the_sweep(tmp_path: Path, monkeypatch) -> None:
    """Rank >= 1 of a sweep job re-runs that job (its overrides, its directory), never the `-m` sweep."""
    from hydra.core.hydra_config import HydraConfig

    cfg = compose_config("train", ["seed=2", "trainer=ddp_sim"])
    job_dir = tmp_path / "multiruns" / "x" / "1"
    OmegaConf.set_struct(cfg, False)
    cfg.hydra.runtime.output_dir = str(job_dir)
    cfg.hydra.overrides.task = ["seed=2", "trainer=ddp_sim", "hydra.verbose=true"]
    cfg.hydra.job.name = "train"
    cfg.hydra.mode = "MULTIRUN"
    cfg.hydra.runtime.cwd = str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    monkeypatch.setattr(
        sys, "argv", ["rails-train", "-m", "--config-name", "train", "seed=1,2", "trainer=ddp_sim"]
    )
    command, cwd = ddp.child_command(local_rank=1)
    GlobalHydra.instance().clear()
    args = command[command.index("--config-name") :]
    assert "-m" not in args and "seed=1,2" not in args
    assert args[:2] == ["--config-name", "train"]
    assert "seed=2" in args and "trainer=ddp_sim" in args and "hydra.verbose=true" not in args
    assert f"hydra.run.dir={job_dir}" in args and "hydra.mode=RUN" in args
    assert "hydra.output_subdir=null" in args
    assert cwd == str(tmp_path)


def test_launch_patch_reaches_lightnings_ddp_launcher(tmp_path: Path, monkeypatch) -> None:
    from lightning.pytorch.strategies.launchers import subprocess_script

    original = subprocess_script._hydra_subprocess_cmd
    shrink(compose_config("train", []), tmp_path)  # initialises HydraConfig, as inside a Hydra app
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("MASTER_PORT", "1234")
    with ddp.hydra_safe_ddp_launch():
        assert subprocess_script._hydra_subprocess_cmd is ddp.child_command
        os.environ["LOCAL_RANK"] = "0"  # what the launcher does in the launching process
        os.environ["MASTER_PORT"] = "5555"
    assert subprocess_script._hydra_subprocess_cmd is original
    assert "LOCAL_RANK" not in os.environ and os.environ["MASTER_PORT"] == "1234"
    GlobalHydra.instance().clear()


def test_lightning_is_the_version_the_launch_patch_was_written_for() -> None:
    """rails.runs.ddp replaces a private Lightning function: pin the versions whose launcher it was read in."""
    import inspect

    import lightning
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as pytorch_launcher
    from packaging.version import Version

    low, high = ddp.LIGHTNING_RANGE
    assert Version(low) <= Version(lightning.__version__) < Version(high), (
        f"lightning {lightning.__version__} is outside >={low},<{high}, the range rails.runs.ddp was written for: "
        f"read {pytorch_launcher.__file__} (how it builds a child rank's command under Hydra), adapt "
        "rails.runs.ddp.hydra_safe_ddp_launch if needed, then widen LIGHTNING_RANGE"
    )
    for module in (fabric_launcher, pytorch_launcher):
        function = getattr(module, ddp.PATCHED, None)
        assert function is not None, f"{module.__name__} has no {ddp.PATCHED}: rails.runs.ddp patches nothing"
        assert list(inspect.signature(function).parameters) == ["local_rank"], (
            f"{module.__name__}.{ddp.PATCHED} changed its signature: {inspect.signature(function)}"
        )
        calls = inspect.getsource(module._SubprocessScriptLauncher._call_children_scripts)
        assert f"{ddp.PATCHED}(" in calls, (
            f"{module.__name__}._SubprocessScriptLauncher no longer calls {ddp.PATCHED}: the patch has no effect"
        )


# ------------------------------------------------------------------------------------------------ slow
DDP_OVERRIDES = [
    *(o for o in TINY_OVERRIDES if not o.startswith(("trainer.accelerator", "data.source.num_users"))),
    "data.source.num_users=121",  # odd: a padding sampler would duplicate one user on rank 1
    "trainer=ddp_sim",
    "trainer.devices=2",
]


def _rails_train(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    paths = [
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"data.root={tmp_path / 'data'}",
    ]
    return subprocess.run(
        [sys.executable, "-m", "rails.train", *args, *paths],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_two_process_metrics_equal_one_process_evaluation(tmp_path: Path) -> None:
    result = _rails_train(DDP_OVERRIDES, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    run_dirs = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(run_dirs) == 1, run_dirs  # both ranks wrote into one run directory
    ddp_metrics = json.loads((run_dirs[0] / "metrics.json").read_text())
    best = next((run_dirs[0] / "checkpoints").glob("epoch_*.ckpt"))
    assert torch.load(best, weights_only=True)["rails_config"]["trainer"]["devices"] == 2

    cfg = shrink(
        compose_config(
            "eval", [f"ckpt_path={best}", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]
        ),
        tmp_path / "eval",
    )
    single = evaluate(cfg)
    GlobalHydra.instance().clear()
    assert set(ddp_metrics) == set(single)
    for key, value in single.items():
        assert ddp_metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


@pytest.mark.slow
def test_multirun_with_ddp_creates_one_directory_per_job(tmp_path: Path) -> None:
    result = _rails_train(["-m", "seed=1,2", *DDP_OVERRIDES], tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    task_dir = tmp_path / "logs" / "train"
    assert not (task_dir / "runs").exists()  # no rank started a run of its own
    sweeps = list((task_dir / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps  # no rank started a sweep of its own
    jobs = sorted(p.name for p in sweeps[0].iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0", "1"]
    for job in jobs:
        assert (sweeps[0] / job / "metrics.json").is_file()
    summary = json.loads((sweeps[0] / "summary.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["ok", "ok"]
    assert summary["best"]["job"] in jobs
