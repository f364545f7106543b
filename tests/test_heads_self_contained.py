"""A similarity head is a self-contained choice: every encoder trains with every head and no other override,
and explicit settings still win over the head's training recipe."""

from __future__ import annotations

import functools
from pathlib import Path

import hydra
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from rails.models.encoders.sasrec import SASRec
from rails.models.losses.negatives import UniformNegatives
from rails.models.losses.sampled_softmax import SampledSoftmaxLoss
from rails.models.retrieval_module import RetrievalModule
from rails.models.similarity.dot_product import DotProductSimilarity
from rails.models.similarity.mol import MoLSimilarity
from tests.conftest import TINY_OVERRIDES, build_model_and_loader, compose_config, shrink

ENCODERS = ["sasrec", "hstu", "hstu_large", "bsarec"]
HEADS = ["dot", "mol"]
RECIPES = {  # spec §1.7, §2, §3.5
    "dot": (0.05, "l2", {}),
    "mol": (1.0, "layer_norm", {"mi_loss": 0.001, "uid_embedding_l2_norm": 0.1}),
}


def _tiny(tmp_path: Path, overrides: list[str]) -> DictConfig:
    return shrink(compose_config("train", [*TINY_OVERRIDES, *overrides]), tmp_path)


_build = build_model_and_loader


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("encoder", ENCODERS)
def test_every_encoder_trains_one_step_with_every_head(encoder: str, head: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = _tiny(tmp_path, [f"model/encoder={encoder}", f"model/similarity={head}"])
    try:
        model, loader = _build(cfg)
    finally:
        GlobalHydra.instance().clear()
    temperature, norm, aux = RECIPES[head]
    assert model.loss.temperature == temperature
    assert model.encoder.output_norm.kind == norm
    assert model.aux_loss_weights == aux

    optimizer = model.configure_optimizers()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.train()
    loss, parts = model.training_loss(next(iter(loader)))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

    assert torch.isfinite(loss) and set(parts) == {"sampled_softmax", *aux}
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    trained = ["items.", "encoder."] + (["similarity."] if head == "mol" else [])  # dot has no parameters
    for part in trained:
        assert any(name.startswith(part) for name in changed), f"no parameter of {part} changed"


@pytest.mark.parametrize("uid_weight", [[], ["+model.aux_loss_weights.uid_embedding_l2_norm=0.1"]])
def test_mol_without_user_id_components_needs_no_uid_weight(uid_weight: list[str], tmp_path: Path) -> None:
    cfg = _tiny(tmp_path, ["model/similarity=mol", "model.similarity.uid_hash_sizes=[]", *uid_weight])
    try:
        model, loader = _build(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert model.aux_loss_weights == {"mi_loss": 0.001}
    model.train()
    _, parts = model.training_loss(next(iter(loader)))
    assert set(parts) == {"sampled_softmax", "mi_loss"}


def test_explicit_settings_win_over_the_head_recipe(tmp_path: Path) -> None:
    cfg = _tiny(
        tmp_path,
        [
            "model/similarity=mol",
            "model.loss.temperature=0.2",
            "model.encoder.output_norm=none",
            "model.similarity.uid_l2_weight=0.3",
            "+model.aux_loss_weights.mi_loss=0.5",
        ],
    )
    model = hydra.utils.instantiate(cfg.model, num_items=20)
    GlobalHydra.instance().clear()
    assert model.loss.temperature == 0.2
    assert model.encoder.output_norm.kind == "none"
    assert model.aux_loss_weights == {"mi_loss": 0.5, "uid_embedding_l2_norm": 0.3}


def test_head_recipe_keys_override_the_head(tmp_path: Path) -> None:
    cfg = _tiny(tmp_path, ["model.similarity.loss_temperature=0.1", "model.similarity.query_norm=none"])
    model = hydra.utils.instantiate(cfg.model, num_items=20)
    GlobalHydra.instance().clear()
    assert isinstance(model.similarity, DotProductSimilarity)
    assert (model.loss.temperature, model.encoder.output_norm.kind) == (0.1, "none")


def test_weight_for_a_loss_the_head_does_not_return_is_refused(tmp_path: Path) -> None:
    cfg = _tiny(tmp_path, ["model/similarity=mol", "+model.aux_loss_weights.mi_los=0.5"])
    with pytest.raises(
        Exception, match=r"\['mi_los'\] is not an auxiliary loss of MoLSimilarity \(its losses"
    ):
        hydra.utils.instantiate(cfg.model, num_items=20)
    GlobalHydra.instance().clear()


def _tiny_python_module(
    head: DotProductSimilarity | MoLSimilarity, **encoder_kwargs: object
) -> RetrievalModule:
    encoder = SASRec(dim=8, max_seq_len=6, num_blocks=1, ffn_hidden_dim=8, **encoder_kwargs)  # type: ignore[arg-type]
    return RetrievalModule(
        encoder,
        head,
        SampledSoftmaxLoss(),
        UniformNegatives(num_negatives=4),
        optimizer=functools.partial(torch.optim.AdamW),
        num_items=10,
        item_dim=8,
    )


def test_python_api_takes_the_recipe_from_the_head() -> None:
    mol = MoLSimilarity(query_dim=8, item_dim=8, num_query_components=2, component_dim=4, query_hidden_dim=8)
    module = _tiny_python_module(mol)
    assert (module.loss.temperature, module.encoder.output_norm.kind) == (1.0, "layer_norm")
    assert module.aux_loss_weights == {"mi_loss": 0.001}
    explicit = _tiny_python_module(DotProductSimilarity(), output_norm="none")
    assert (explicit.loss.temperature, explicit.encoder.output_norm.kind) == (0.05, "none")
    with pytest.raises(RuntimeError, match="temperature is None"):  # a loss on its own has no head to ask
        SampledSoftmaxLoss()(torch.zeros(2), torch.zeros(2, 3))
