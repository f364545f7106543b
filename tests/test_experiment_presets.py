"""Every experiment preset builds the model of its paper row (spec §3.5), with the values in effect after the
similarity head's training recipe was applied (loss temperature, encoder output norm, aux-loss weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import hydra
import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from rails.config import config_dir
from tests.conftest import compose_config

MOL_ML = {"mi_loss": 0.001, "uid_embedding_l2_norm": 0.1}
MOL_BOOKS = {"mi_loss": 0.001}


class Row(NamedTuple):
    """One row of spec §3.5 (GR's small HSTU: SASRec settings with its own blocks/heads/d_qk, spec §3.5)."""

    blocks: int
    heads: int
    dim: int
    dropout: float
    negatives: int
    loss_temperature: float
    output_norm: str
    aux: dict[str, float]
    weight_decay: float
    epochs: int
    mol: tuple[int, int, int] | None = None  # P_Q x P_X x d_P
    uid: tuple[list[int], float] | None = None  # hash sizes, uid dropout


DOT = (0.05, "l2", {})
MOL = (1.0, "layer_norm")
PAPER = {
    "ml_1m_sasrec_dot": Row(2, 1, 50, 0.2, 128, *DOT, 0.0, 101),
    "ml_1m_sasrec_mol": Row(2, 1, 50, 0.2, 128, *MOL, MOL_ML, 0.0, 101, (8, 4, 64), ([6040], 0.5)),
    "ml_1m_hstu_dot": Row(2, 1, 50, 0.2, 128, *DOT, 0.0, 101),
    "ml_1m_hstu_large_dot": Row(8, 2, 50, 0.2, 128, *DOT, 1e-3, 101),
    "ml_1m_hstu_large_mol": Row(8, 2, 50, 0.2, 128, *MOL, MOL_ML, 1e-3, 101, (8, 4, 64), ([6040], 0.5)),
    "ml_20m_sasrec_dot": Row(4, 4, 256, 0.2, 128, *DOT, 0.0, 151),
    "ml_20m_sasrec_mol": Row(4, 4, 256, 0.2, 128, *MOL, MOL_ML, 0.0, 151, (8, 4, 128), ([16384], 0.8)),
    "ml_20m_hstu_dot": Row(4, 4, 256, 0.2, 128, *DOT, 0.0, 101),
    "ml_20m_hstu_large_dot": Row(16, 8, 256, 0.2, 128, *DOT, 0.0, 151),
    "ml_20m_hstu_large_mol": Row(16, 8, 256, 0.2, 128, *MOL, MOL_ML, 1e-3, 151, (8, 4, 128), ([16384], 0.8)),
    "amzn_books_sasrec_dot": Row(4, 4, 64, 0.5, 512, *DOT, 0.0, 201),
    "amzn_books_sasrec_mol": Row(4, 4, 64, 0.5, 512, *MOL, MOL_BOOKS, 0.0, 201, (8, 8, 32)),
    "amzn_books_hstu_dot": Row(4, 4, 64, 0.5, 512, *DOT, 0.0, 201),
    "amzn_books_hstu_large_dot": Row(16, 8, 64, 0.5, 512, *DOT, 0.0, 201),
    "amzn_books_hstu_large_mol": Row(16, 8, 64, 0.5, 512, *MOL, MOL_BOOKS, 1e-3, 201, (8, 8, 32)),
}
# Presets that reuse a paper preset's model and trainer on other data (conf/experiment/*.yaml headers).
DERIVED = {f"ml_1m_seq_{m}": f"ml_1m_{m}" for m in ("sasrec_dot", "sasrec_mol", "hstu_dot", "hstu_large_dot")}
DERIVED |= {"ml_1m_seq_hstu_large_mol": "ml_1m_hstu_large_mol"}
DERIVED |= {f"amazon_beauty_{m}": f"amzn_books_{m}" for m in ("sasrec_dot", "sasrec_mol", "hstu_large_dot")}
DERIVED |= {"amazon_beauty_hstu_large_mol": "amzn_books_hstu_large_mol"}
QA = {  # name: (loss temperature, aux weights)
    "qa_nq_minilm_dot": (0.05, {}),
    "qa_nq_minilm_mol": (1.0, MOL_BOOKS),
    "qa_scifact_minilm_dot": (0.05, {}),
    "qa_scifact_minilm_mol": (1.0, MOL_BOOKS),
}


def _blocks_and_heads(encoder: Any) -> tuple[int, int]:
    if hasattr(encoder, "layers"):  # HSTU
        return len(encoder.layers), encoder.layers[0].num_heads
    return len(encoder.attentions), encoder.attentions[0].num_heads  # SASRec


def _build(preset: str) -> tuple[Any, Any]:
    if not (Path(config_dir()) / "experiment" / f"{preset}.yaml").is_file():
        pytest.skip(f"conf/experiment/{preset}.yaml is not there")
    cfg = compose_config("train", [f"experiment={preset}", "~logger"])
    GlobalHydra.instance().clear()
    return cfg, hydra.utils.instantiate(cfg.model, num_items=16)


@pytest.mark.parametrize("preset", sorted(PAPER) + sorted(DERIVED))
def test_preset_matches_its_paper_row(preset: str) -> None:
    row = PAPER[DERIVED.get(preset, preset)]
    cfg, model = _build(preset)
    encoder = model.encoder
    assert (*_blocks_and_heads(encoder), encoder.dim) == (row.blocks, row.heads, row.dim)
    assert cfg.model.encoder.dropout == row.dropout and cfg.data.max_seq_len == (50 if row.dim == 64 else 200)
    assert model.negatives.num_negatives == row.negatives
    assert model.loss.temperature == row.loss_temperature
    assert encoder.output_norm.kind == row.output_norm
    assert model.aux_loss_weights == pytest.approx(row.aux)
    assert cfg.model.optimizer.weight_decay == row.weight_decay and cfg.model.optimizer.lr == 1e-3
    assert cfg.trainer.max_epochs == row.epochs
    head = model.similarity
    if row.mol is None:
        assert head.normalize  # L2-normalised items (spec §1.8)
        return
    assert (head.num_query_components, head.num_item_components, head.component_dim) == row.mol
    assert head.temperature == 0.05
    hash_sizes, uid_dropout = row.uid or ([], None)
    assert (head.uid_components.hash_sizes if head.uid_components is not None else []) == hash_sizes
    if hash_sizes:
        assert cfg.model.similarity.uid_dropout == uid_dropout


@pytest.mark.parametrize("preset", sorted(QA))
def test_qa_preset_keeps_its_loss_settings(preset: str) -> None:
    temperature, aux = QA[preset]
    _, model = _build(preset)
    assert model.loss.temperature == temperature
    assert model.aux_loss_weights == aux


def test_quickstart_trains_the_dot_product_recipe() -> None:
    _, model = _build("quickstart")
    assert (model.loss.temperature, model.encoder.output_norm.kind, model.aux_loss_weights) == DOT


# The tuned presets: the base preset plus the overrides of the measured rows they name (docs/results.md).
TUNED = {
    "amazon_beauty_hstu_large_mol_tuned": (
        "amazon_beauty_hstu_large_mol",
        [
            "model/mol_recipe=joint",
            "model/similarity_blend=cosine",
            "callbacks/weight_averaging=ema",
            "model.item_dim=128",
            "model.negatives.num_negatives=2048",
            "trainer.max_epochs=61",
            "trainer.precision=32-true",
        ],
    ),
    "amazon_beauty_hstu_large_dot_tuned": (
        "amazon_beauty_hstu_large_dot",
        [
            "callbacks/weight_averaging=ema",
            "model.item_dim=128",
            "model.negatives.num_negatives=2048",
            "trainer.max_epochs=61",
            "trainer.precision=32-true",
        ],
    ),
    "ml_1m_seq_hstu_large_mol_tuned": (
        "ml_1m_seq_hstu_large_mol",
        ["model/mol_recipe=joint", "model/similarity_blend=cosine"],
    ),
}


def _resolved(preset: str, overrides: list[str]) -> dict[str, Any]:
    # paths.output_dir: the run folder, Hydra's at launch (named after task_name)
    cfg = compose_config("train", [f"experiment={preset}", "paths.output_dir=/run", *overrides])
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        for key in ("hydra", "task_name"):  # hydra: the launcher's run / sweep folders, set at launch
            if key in cfg:
                del cfg[key]
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    return resolved


@pytest.mark.parametrize("preset", sorted(TUNED))
def test_tuned_preset_is_its_base_with_the_measured_overrides(preset: str) -> None:
    base, overrides = TUNED[preset]
    tuned = _resolved(preset, [])
    assert tuned == _resolved(base, overrides)
    assert tuned != _resolved(base, [])  # the overrides change something the base preset sets
