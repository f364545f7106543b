"""Shared fixtures: composed Hydra configs shrunk to tiny CPU runs, real shared data, temp dirs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import hydra
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import rails.config

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RAILS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``../shared/data`` (real MovieLens-100K, ML-1M side files, SciFact); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set RAILS_SHARED_DATA to point at it)")
    return SHARED_DATA


def compose_config(config_name: str = "train", overrides: list[str] | None = None) -> DictConfig:
    """Compose a primary config from ``conf/`` with Hydra's runtime fields filled in (no app run)."""
    return rails.config.compose_config(config_name, overrides or [], return_hydra_config=True)


TINY_OVERRIDES = [
    "data.source.num_users=120",
    "data.source.num_items=200",
    "data.source.num_clusters=10",
    "data.source.min_length=8",
    "data.source.max_length=30",
    "data.max_seq_len=20",
    "data.batch_size=32",
    "data.eval_batch_size=64",
    "model.item_dim=16",
    "model.negatives.num_negatives=16",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "++callbacks.progress_bar=null",
    "~logger",
]


def shrink(cfg: DictConfig, tmp_path: Path) -> DictConfig:
    """Point every path of a composed config at ``tmp_path`` and fill Hydra's runtime output dir."""
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.data_dir = str(tmp_path / "data")
        if "data" in cfg and cfg.data is not None and "root" in cfg.data:
            cfg.data.root = str(tmp_path / "data")
        if "hydra" in cfg:
            cfg.hydra.runtime.output_dir = str(tmp_path / "run")
            cfg.hydra.job.num = 0
            cfg.hydra.job.id = "0"
    if "hydra" in cfg:
        HydraConfig.instance().set_config(cfg)  # the ${hydra:...} resolver reads this singleton
    return cfg


def build_model_and_loader(cfg: DictConfig) -> tuple[torch.nn.Module, torch.utils.data.DataLoader]:
    """Check a composed train config, build its datamodule and model (corpus set), return the train loader."""
    rails.config.check_config(cfg)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = hydra.utils.instantiate(cfg.model, num_items=datamodule.num_items)
    model.set_corpus(datamodule.corpus_item_ids())
    return model, datamodule.train_dataloader()


def tiny_model(tmp_path: Path, overrides: list[str]) -> tuple[torch.nn.Module, torch.utils.data.DataLoader]:
    """Model and train loader of the train config with TINY_OVERRIDES + ``overrides`` (Hydra state cleared)."""
    cfg = shrink(compose_config("train", [*TINY_OVERRIDES, *overrides]), tmp_path)
    try:
        return build_model_and_loader(cfg)
    finally:
        GlobalHydra.instance().clear()


def train_tiny_checkpoint(tmp_path: Path, overrides: list[str]) -> Path:
    """The best checkpoint of a one-epoch ``rails-train`` run of TINY_OVERRIDES + ``overrides`` (no test stage)."""
    from rails.train import run  # the app: imported only by the tests that train

    run(shrink(compose_config("train", [*TINY_OVERRIDES, *overrides, "test=false"]), tmp_path))
    GlobalHydra.instance().clear()
    return next((tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt"))


def eval_checkpoint(ckpt: Path, folder: Path, overrides: list[str] | None = None) -> dict[str, float]:
    """``rails-eval ckpt_path=ckpt`` on the CPU with ``overrides`` (outputs under ``folder``; Hydra state cleared)."""
    from rails.eval import evaluate

    cfg = shrink(
        compose_config("eval", [f"ckpt_path={ckpt}", "trainer.accelerator=cpu", *(overrides or [])]), folder
    )
    with open_dict(cfg):
        cfg.trainer.enable_progress_bar = False
    try:
        return evaluate(cfg)
    finally:
        GlobalHydra.instance().clear()


def copy_shared_weights(source: torch.nn.Module, target: torch.nn.Module) -> None:
    """Load ``source``'s encoder and item table into ``target`` (the similarity heads differ)."""
    shared = {
        name: value for name, value in source.state_dict().items() if not name.startswith("similarity.")
    }
    missing = target.load_state_dict(shared, strict=False)
    assert not missing.unexpected_keys and all(key.startswith("similarity.") for key in missing.missing_keys)


def loss_and_encoder_grads(
    model: torch.nn.Module, batch: object, seed: int = 1
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Training loss of ``batch`` (RNG seeded: the same negatives and dropout draws for every model) and the
    gradients of every parameter outside the similarity head."""
    model.train().zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss, _ = model.training_loss(batch)
    loss.backward()
    grads = {
        n: p.grad
        for n, p in model.named_parameters()
        if p.grad is not None and not n.startswith("similarity.")
    }
    return loss.detach(), grads


def assert_same_first_step(reference: torch.nn.Module, model: torch.nn.Module, batch: object) -> None:
    """Give ``model`` the encoder and item table of ``reference``, then check that one training step on ``batch``
    has the same loss and the same gradients of every parameter outside the similarity head."""
    copy_shared_weights(reference, model)
    ref_loss, ref_grads = loss_and_encoder_grads(reference, batch)
    loss, grads = loss_and_encoder_grads(model, batch)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert ref_grads.keys() == grads.keys() and any(n.startswith("items.") for n in ref_grads)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.fixture
def tiny_train_cfg(tmp_path: Path) -> Iterator[DictConfig]:
    """The default train config on a tiny synthetic dataset, CPU, one epoch, no loggers."""
    cfg = shrink(compose_config("train", TINY_OVERRIDES), tmp_path)
    yield cfg
    GlobalHydra.instance().clear()
