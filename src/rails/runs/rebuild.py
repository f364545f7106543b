"""Rebuild a trained run from its checkpoint: its data module and its model with the trained weights.

Used by ``rails-eval`` (validate + test again) and by the top-k benchmark (the queries a trained model makes
for its test users, ``scripts/bench_topk.py --checkpoint-data-root``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from rails.runs.checkpoints import check_state_dict_matches


def rebuild_run(
    checkpoint: Mapping[str, Any],
    data_cfg: Any,
    model_cfg: Any,
    source: str | os.PathLike[str],
    stage: str = "validate",
) -> tuple[L.LightningModule, L.LightningDataModule]:
    """The run's model (trained weights loaded) and its data module (prepared, set up for ``stage``).

    Args:
        checkpoint: a loaded rails-train checkpoint (``state_dict``, ``hyper_parameters.num_items``).
        data_cfg: the data config to build (the stored one, or an override).
        model_cfg: the model config to build (the stored one, possibly edited).
        source: the checkpoint's name in error messages.
        stage: the data module's ``setup`` stage.

    Raises:
        ValueError: the data has item ids beyond the checkpoint's item table.
        CheckpointError: the weights do not fit the model built from ``model_cfg``.
    """
    datamodule: L.LightningDataModule = hydra.utils.instantiate(data_cfg)
    datamodule.prepare_data()
    datamodule.setup(stage)
    num_items = int(checkpoint["hyper_parameters"]["num_items"])
    if datamodule.num_items > num_items:
        raise ValueError(
            f"data has item ids up to {datamodule.num_items - 1} but the checkpoint's table has {num_items} rows"
        )
    model: L.LightningModule = hydra.utils.instantiate(model_cfg, num_items=num_items)
    check_state_dict_matches(model, checkpoint["state_dict"], source)
    model.load_state_dict(checkpoint["state_dict"])
    return model, datamodule


@torch.no_grad()
def trained_test_queries(
    checkpoint: Mapping[str, Any], data_root: str, num_queries: int, device: Any, source: str
) -> tuple[Tensor, Tensor]:
    """(Q, D) query embeddings and (Q,) user ids of the first ``num_queries`` test users of the run's data.

    The run's stored data config is rebuilt with ``root = data_root`` (its relative file paths resolve there) and
    its model with the checkpoint's weights (the encoder uncompiled: the same weights, no compilation).

    Raises:
        ValueError: naming ``source`` when the checkpoint lacks what this needs or the test split is too small.
    """
    stored: DictConfig = OmegaConf.create(dict(checkpoint["rails_config"]))
    if "data" not in stored or "root" not in stored.data:
        raise ValueError(f"{source}: the stored config has no data.root to point at {data_root!r}")
    if checkpoint.get("hyper_parameters", {}).get("num_items") is None:
        raise ValueError(f"{source}: no hyper_parameters.num_items (not written by rails-train?)")
    stored.data.root = data_root
    if "compile_encoder" in stored.model:
        stored.model.compile_encoder = False
    model, datamodule = rebuild_run(checkpoint, stored.data, stored.model, source, stage="test")
    model = model.to(device).eval()
    queries: list[Tensor] = []
    users: list[Tensor] = []
    for batch in datamodule.test_dataloader():
        batch = batch.to(device)
        queries.append(model.embed_queries(batch))
        users.append(batch.user_ids)
        if sum(len(q) for q in queries) >= num_queries:
            break
    found = sum(len(q) for q in queries)
    if found < num_queries:
        raise ValueError(
            f"{source}: the test split has {found} users, fewer than the {num_queries} queries needed"
        )
    return torch.cat(queries)[:num_queries].float(), torch.cat(users)[:num_queries]
