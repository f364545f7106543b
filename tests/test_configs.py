"""Every Hydra config composes, passes the signature check and instantiates; bad values fail fast."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hydra
import pytest
from omegaconf import DictConfig, OmegaConf, open_dict

from rails.config import ConfigError, check_config, config_dir
from tests.conftest import TINY_OVERRIDES, compose_config

CONF = Path(config_dir())
# Options that are templates with mandatory (`???`) keys, or need a companion choice: the values a user must give.
MANDATORY = {
    ("data", "qa_beir"): ["data.source.name=scifact"],
    ("model/similarity_blend", "cosine"): ["model/similarity=mol", "model.dot_loss_weight=1.0"],  # blends MoL
    ("model/mol_recipe", "joint"): ["model/similarity=mol"],  # sets MoL keys
}
SKIP_GROUPS = {"hydra", "local", "hparams_search"}  # hydra internals, per-machine files, sweeper-only configs


def _options() -> list[tuple[str, str]]:
    """(group path, option) for every yaml under conf/<group>/, nested groups included."""
    found = []
    for path in sorted(CONF.rglob("*.yaml")):
        group = path.parent.relative_to(CONF).as_posix()
        if group == "." or group.split("/")[0] in SKIP_GROUPS or "launcher" in group:
            continue
        found.append((group, path.stem))
    return found


def _instantiate_parts(cfg: DictConfig) -> None:
    with open_dict(cfg):
        cfg.trainer.accelerator = "cpu"
        cfg.trainer.precision = "32-true"
        if "strategy" in cfg.trainer:
            cfg.trainer.devices = 1
            cfg.trainer.strategy = "auto"
    check_config(cfg)
    datamodule = hydra.utils.instantiate(cfg.data)
    assert datamodule is not None
    model = hydra.utils.instantiate(cfg.model, num_items=64)
    assert sum(p.numel() for p in model.parameters()) > 0
    for group in ("callbacks", "retrieval", "logger"):
        for conf in (cfg.get(group) or {}).values():
            if isinstance(conf, DictConfig) and "_target_" in conf:
                hydra.utils.instantiate(conf)
    hydra.utils.instantiate(cfg.trainer)


@pytest.mark.parametrize(("group", "option"), _options(), ids=lambda v: str(v))
def test_every_group_option_composes_and_instantiates(group: str, option: str, tmp_path: Path) -> None:
    if group == "experiment":
        overrides = [f"experiment={option}", "~logger", "trainer.max_epochs=1"]
    else:
        overrides = [*TINY_OVERRIDES, f"{group}={option}"]
        if group == "data" and option != "synthetic":  # the tiny sizes are synthetic-generator keys
            overrides = [o for o in overrides if not o.startswith("data.")]
        if option.startswith("qa_"):  # text retrieval: QA data and the dual-encoder model go together
            overrides = [o for o in overrides if not o.startswith(("data.", "model."))]
            overrides += ["model=qa_dual_encoder"] if group == "data" else ["data=qa_scifact"]
        overrides += MANDATORY.get((group, option), [])
        if group == "logger":
            overrides.remove("~logger")
    cfg = compose_config("train", overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.data_dir = str(tmp_path / "data")
    _instantiate_parts(cfg)


def test_eval_config_composes() -> None:
    cfg = compose_config("eval", ["ckpt_path=some.ckpt"])
    assert cfg.stages == ["val", "test"]
    assert OmegaConf.is_missing(compose_config("eval"), "ckpt_path")


def test_unknown_key_is_named() -> None:
    cfg = compose_config("train", [*TINY_OVERRIDES, "+model.encoder.num_layers=3"])
    with pytest.raises(ConfigError, match=r"model\.encoder\.num_layers: unknown key"):
        check_config(cfg)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.encoder.num_blocks=two", r"model\.encoder\.num_blocks"),
        ("data.batch_size=1.5", r"data\.batch_size"),
    ],
)
def test_wrong_type_is_named(override: str, key: str) -> None:
    cfg = compose_config("train", [*TINY_OVERRIDES, override])
    with pytest.raises(ConfigError, match=key):
        check_config(cfg)


def _cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("~")] + ["logger=csv"]
    flags = [a for a in args if a.startswith("-")]  # argparse wants flags before the overrides
    rest = [a for a in args if not a.startswith("-")]
    cmd = [sys.executable, "-m", "rails.train", *flags, *overrides, f"paths.root_dir={tmp_path}", *rest]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)


def test_cli_rejects_bad_value_naming_the_key(tmp_path: Path) -> None:
    result = _cli(["model.encoder.num_heads=many", "+trainer.fast_dev_run=true"], tmp_path)
    assert result.returncode != 0
    assert "model.encoder.num_heads" in result.stderr + result.stdout


def test_cli_multirun_runs_two_jobs(tmp_path: Path) -> None:
    result = _cli(["-m", "model.optimizer.lr=1e-3,3e-3", "trainer.max_epochs=1"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = sorted((tmp_path / "logs").rglob("metrics.json"))
    assert len(metrics) == 2
