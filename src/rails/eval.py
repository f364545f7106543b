"""``rails-eval ckpt_path=...``: re-evaluate a checkpoint on its validation and test splits.

The checkpoint carries the resolved config of the run that wrote it (``rails_config``), so the same
data, model and evaluation callbacks are rebuilt; ``data=...``, ``retrieval=...`` and ``trainer.*`` overrides
replace the stored ones (e.g. evaluate on another split protocol or with other cutoffs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from rails.config import ConfigError, check_config, config_dir, instantiate_dict
from rails.log import get_logger, print_metrics_table, write_metrics
from rails.runs.checkpoints import load_checkpoint_file, require_rails_entries
from rails.runs.rebuild import rebuild_run

log = get_logger(__name__)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a rails checkpoint (tensors and plain containers only: ``weights_only=True``, never a full unpickle).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, unsafe or foreign file (the message names the file and what was found).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path}: no such checkpoint file")
    checkpoint = load_checkpoint_file(path)
    require_rails_entries(checkpoint, f"ckpt_path={path}", ("rails_config", "state_dict", "hyper_parameters"))
    return checkpoint


def override_model(model_cfg: DictConfig, overrides: Any, source: str) -> DictConfig:
    """The stored model config with ``overrides`` (nested keys) merged in.

    A key may be new (an argument the run's code did not have yet) but its parent must exist in the stored
    config; the rebuilt module then rejects an unknown argument by name.

    Raises:
        ConfigError: an override's parent node is not in the stored model config.
    """
    if not overrides:
        return model_cfg
    flat = OmegaConf.to_container(OmegaConf.create(overrides))

    def keys(tree: Any, prefix: str = "") -> list[str]:
        if isinstance(tree, dict):
            return [k for name, sub in tree.items() for k in keys(sub, f"{prefix}{name}.")]
        return [prefix[:-1]]

    for key in keys(flat):
        parent = key.rpartition(".")[0]
        if parent and OmegaConf.select(model_cfg, parent, default=None) is None:
            raise ConfigError(f"model_overrides.{key}: the model config stored in {source} has no {parent!r}")
    return OmegaConf.merge(model_cfg, flat)  # type: ignore[return-value]


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Rebuild the run stored in ``cfg.ckpt_path``, load its weights and run validate + test."""
    checkpoint = load_checkpoint(cfg.ckpt_path)
    stored = OmegaConf.create(checkpoint["rails_config"])
    # Evaluate with the float32 matmul precision the run validated with (TF32 or not), unless overridden.
    precision = cfg.get("matmul_precision") or stored.get("matmul_precision")
    if precision:
        torch.set_float32_matmul_precision(precision)
    data_cfg = cfg.data if cfg.get("data") is not None else stored.data
    retrieval_cfg = cfg.retrieval if cfg.get("retrieval") is not None else stored.get("retrieval")
    try:
        check_config(OmegaConf.create({"data": data_cfg, "retrieval": retrieval_cfg, "trainer": cfg.trainer}))
    except ConfigError as err:
        if cfg.get("retrieval") is None and str(err).startswith("retrieval."):
            raise ConfigError(
                f"{err} -- the checkpoint's stored evaluation config no longer builds (written by an older "
                "rails?): pass retrieval=default (next-item data) or retrieval=qa (question answering)"
            ) from err
        raise
    model_cfg = override_model(stored.model, cfg.get("model_overrides"), cfg.ckpt_path)
    if cfg.get("model_overrides"):  # an overridden key is checked like any rails-train key
        check_config(OmegaConf.create({"model": model_cfg}), "")
    model, datamodule = rebuild_run(checkpoint, data_cfg, model_cfg, cfg.ckpt_path)
    model.run_config = checkpoint["rails_config"]
    callbacks = instantiate_dict(retrieval_cfg, "retrieval")
    loggers = instantiate_dict(cfg.get("logger"), "logger")
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    metrics: dict[str, float] = {}
    for stage in cfg.stages:
        run_stage = {"val": trainer.validate, "test": trainer.test}.get(stage)
        if run_stage is None:
            raise ValueError(f"stages: unknown stage {stage!r} (expected 'val' or 'test')")
        for result in run_stage(model, datamodule=datamodule, verbose=False):
            metrics.update({k: float(v) for k, v in result.items()})
    if trainer.is_global_zero:
        write_metrics(Path(cfg.paths.output_dir) / "metrics.json", metrics)
        print_metrics_table(metrics, title="rails-eval", caption=f"checkpoint: {cfg.ckpt_path}")
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    evaluate(cfg)


if __name__ == "__main__":
    main()
