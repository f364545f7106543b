"""Bad values are caught when the config is checked, before anything is built, naming the full key and value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from rails.checks import ArgumentError
from rails.config import ConfigError, check_config
from rails.models.encoders.hstu import HSTU
from rails.models.similarity.mol import MoLSimilarity
from tests.conftest import TINY_OVERRIDES, compose_config


def _check(overrides: list[str]) -> None:
    cfg = compose_config("train", [*TINY_OVERRIDES, *overrides])
    GlobalHydra.instance().clear()
    check_config(cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.item_dim=0"], r"^model\.item_dim=0: must be >= 1$"),
        (["model.compile_mode=graphs"], r"^model\.compile_mode='graphs': must be one of \[None, 'default', "),
        (
            ["model/similarity=mol", "model.similarity.query_dim=32"],
            r"^model\.similarity\.query_dim=32: must equal the encoder width \(16\)$",
        ),
        (
            ["model/similarity=mol", "model.similarity.item_dim=8"],
            r"^model\.similarity\.item_dim=8: must equal item_dim \(16\)$",
        ),
        (
            ["model.encoder.dim=20"],
            r"^model\.encoder\.dim=20: must equal item_dim=16 \(the item table width\)$",
        ),
        (["seed=abc"], r"^seed: expected int \| None, got 'abc' \(str\)$"),
        (["matmul_precision=fast"], r"^matmul_precision: expected .*, got 'fast'"),
        (["model.negatives.num_negatives=0"], r"^model\.negatives\.num_negatives=0: must be >= 1$"),
        (["model.loss.temperature=-1"], r"^model\.loss\.temperature=-1: must be > 0"),
        (["model.encoder.num_heads=3"], r"^model\.encoder\.dim=16: must be divisible by num_heads=3$"),
        (["model.encoder.dropout=1.5"], r"^model\.encoder\.dropout=1\.5: must lie in \[0, 1\)$"),
        (
            ["model/encoder=hstu", "model.encoder.num_blocks=0"],
            r"^model\.encoder\.num_blocks=0: must be >= 1$",
        ),
        (
            ["model/similarity=mol", "model.similarity.num_query_components=1"],
            r"^model\.similarity\.uid_hash_sizes=\[6040\]: has 1 tables but num_query_components=1",
        ),
        (["model/similarity=mol", "model.similarity.mi_loss_weight=-1"], r"mi_loss_weight=-1: must be >= 0"),
        (
            [
                "model/similarity=mol",
                "model.similarity.fused_mixing=true",
                "model.similarity.compile_mixing=true",
            ],
            r"^model\.similarity\.fused_mixing=True: excludes compile_mixing=true: choose one$",
        ),
        (
            ["model.similarity.query_norm=batch_norm"],
            r"^model\.similarity\.query_norm: expected Literal\['l2', 'layer_norm', 'none'\], got 'batch_norm'",
        ),
        (
            ["+model.aux_loss_weights.mi_loss=-0.1"],
            r"^model\.aux_loss_weights\.mi_loss=-0\.1: must be a number",
        ),
        (  # the blend ranks with the cosine only the dot loss trains
            ["model/similarity=mol", "model/similarity_blend=cosine"],
            r"^model\.dot_loss_weight=0\.0: must be > 0 when the head ranks with",
        ),
        (  # the blend on the dot head
            ["model/similarity_blend=cosine", "model.dot_loss_weight=1.0"],
            "model/similarity_blend=cosine needs model/similarity=mol",
        ),
        (  # the MoL head recipe on the dot head
            ["model/mol_recipe=joint"],
            r"^model\.similarity\.item_dropout: unknown key for .*DotProductSimilarity",
        ),
    ],
)
def test_bad_value_fails_the_config_check_naming_key_and_value(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _check(overrides)


def test_interpolated_value_is_type_checked_after_resolution() -> None:
    with pytest.raises(ConfigError, match=r"^model\.encoder\.dim: expected int, got 'wide' \(str\)$"):
        _check(["+width=wide", "model.encoder.dim=${width}"])


def test_default_configs_and_mol_pass() -> None:
    _check([])
    _check(["model/similarity=mol", "model/encoder=hstu_large"])
    _check(["model/similarity=mol", "model/similarity_blend=cosine", "model.dot_loss_weight=1.0"])


def test_mol_recipe_sets_the_heads_dropouts_and_the_dot_loss() -> None:
    """model/mol_recipe=joint composes as its explicit overrides would, on an experiment's MoL head too."""
    explicit = ["model.similarity.item_dropout=0.3", "model.similarity.gating_item_dropout=0.3"]
    explicit += ["model.similarity.gating_qi_dropout=0.2", "model.dot_loss_weight=1.0"]
    for base in (["model/similarity=mol"], ["experiment=amazon_beauty_hstu_large_mol"]):
        recipe = compose_config("train", [*base, "model/mol_recipe=joint", "model/similarity_blend=cosine"])
        spelled = compose_config("train", [*base, *explicit, "model/similarity_blend=cosine"])
        assert OmegaConf.to_container(recipe.model) == OmegaConf.to_container(spelled.model)
        assert recipe.model.dot_loss_weight == 1.0 and recipe.model.similarity.item_dropout == 0.3
        check_config(recipe)
    # a command-line value still wins over the recipe's
    assert (
        compose_config(
            "train", ["model/similarity=mol", "model/mol_recipe=joint", "model.dot_loss_weight=3.0"]
        ).model.dot_loss_weight
        == 3.0
    )


def test_constructors_apply_the_same_rules() -> None:
    with pytest.raises(ArgumentError, match=r"^query_dim=0: must be >= 1$"):
        MoLSimilarity(query_dim=0, item_dim=4)
    with pytest.raises(ValueError, match=r"^attention_impl='flash'"):
        HSTU(dim=8, max_seq_len=10, attention_impl="flash")  # type: ignore[arg-type]


def test_cli_rejects_item_dim_zero_before_preparing_data(tmp_path: Path) -> None:
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("~")] + ["logger=csv"]
    result = subprocess.run(
        [sys.executable, "-m", "rails.train", *overrides, f"paths.root_dir={tmp_path}", "model.item_dim=0"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "model.item_dim=0: must be >= 1" in result.stderr + result.stdout
    assert "ZeroDivisionError" not in result.stderr + result.stdout
    assert not (tmp_path / "data").exists()  # nothing was prepared
