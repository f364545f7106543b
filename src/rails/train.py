"""``rails-train``: compose the config, build data/model/callbacks/loggers/trainer, fit, then evaluate.

Examples:
    rails-train                                   # default experiment on the embedded synthetic data
    rails-train model.optimizer.lr=3e-3 trainer.max_epochs=5
    rails-train -m model.optimizer.lr=1e-3,3e-3 trainer.max_epochs=1
    rails-train hparams_search=optuna                  # Optuna sweep maximising val/ndcg@10
    rails-train trainer=ddp trainer.devices=2          # DDP, bf16-mixed (docs/operations.md)
    rails-train ckpt_path=last hydra.run.dir=<run dir> # resume a killed run exactly
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from rails.config import check_config, config_dir, instantiate_dict
from rails.log import get_logger, print_metrics_table, write_metrics
from rails.runs.checkpoints import (
    check_state_dict_matches,
    load_checkpoint_file,
    require_training_state,
)
from rails.runs.ddp import hydra_safe_ddp_launch
from rails.runs.jobs import run_job
from rails.runs.record import log_run_config, write_run_record

log = get_logger(__name__)


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """Instantiate datamodule, model (sized by the data), callbacks, loggers and trainer from ``cfg``."""
    check_config(cfg)
    # Resolve now so a bad interpolation fails before any data is prepared.
    OmegaConf.to_container(cfg.get("model"), resolve=True)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model: L.LightningModule = hydra.utils.instantiate(cfg.model, num_items=datamodule.num_items)
    run_config = OmegaConf.to_container(cfg, resolve=True)
    run_config.pop("hydra", None)  # type: ignore[union-attr]
    model.run_config = run_config  # type: ignore[assignment]
    callbacks = instantiate_dict(cfg.get("callbacks"), "callbacks") + instantiate_dict(
        cfg.get("retrieval"), "retrieval"
    )
    loggers = instantiate_dict(cfg.get("logger"), "logger")
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    log_run_config(trainer, model, run_config)  # type: ignore[arg-type]
    return datamodule, model, trainer


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """``ckpt_path`` to resume from: ``last`` means ``<output_dir>/checkpoints/last.ckpt`` of this run directory.

    Raises:
        FileNotFoundError: naming ``ckpt_path`` when the file does not exist.
    """
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        path = Path(output_dir) / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise FileNotFoundError(
                f"ckpt_path=last: no {path}; resume inside the killed run's directory with "
                "`hydra.run.dir=<that run directory>` (or pass the checkpoint file as ckpt_path)"
            )
        return str(path)
    if "://" not in ckpt_path and not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    return ckpt_path


def run(cfg: DictConfig) -> dict[str, float]:
    """Train and evaluate; returns the final metrics (also written to ``<output_dir>/metrics.json``)."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    if cfg.get("matmul_precision"):
        torch.set_float32_matmul_precision(cfg.matmul_precision)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.output_dir)
    datamodule, model, trainer = build(cfg)
    if ckpt_path is not None and "://" not in ckpt_path:
        # Refuse an unsafe, unreadable or mismatched file before anything trains (Lightning loads it again).
        resumed = load_checkpoint_file(ckpt_path)
        if cfg.get("train", True):
            require_training_state(resumed, ckpt_path)
        check_state_dict_matches(model, resumed.get("state_dict", {}), ckpt_path)
    with hydra_safe_ddp_launch():
        return _fit_and_evaluate(cfg, datamodule, model, trainer, ckpt_path)


def _fit_and_evaluate(
    cfg: DictConfig,
    datamodule: L.LightningDataModule,
    model: L.LightningModule,
    trainer: L.Trainer,
    ckpt_path: str | None,
) -> dict[str, float]:
    metrics: dict[str, float] = {}
    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    if cfg.get("train", True):
        if best:
            log.info(f"best checkpoint: {best}")
        for result in trainer.validate(
            model, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True
        ):
            metrics.update(result)
    if cfg.get("test", True):
        for result in trainer.test(
            model, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True
        ):
            metrics.update(result)
    metrics = {k: float(v) for k, v in metrics.items() if k.startswith(("val/", "test/"))}
    if trainer.is_global_zero:
        output_dir = Path(cfg.paths.output_dir)
        write_metrics(output_dir / "metrics.json", metrics)
        write_run_record(output_dir / "run.json", trainer, epochs=trainer.current_epoch, best_checkpoint=best)
        print_metrics_table(
            metrics, title=f"rails: {cfg.get('task_name', 'train')}", caption=f"run directory: {output_dir}"
        )
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> Any:
    """Hydra entry point; returns ``cfg.optimized_metric`` for sweepers (NaN for a failed sweep job)."""
    return run_job(run, cfg)


if __name__ == "__main__":
    main()
