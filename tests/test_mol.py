"""Mixture-of-Logits head: numerics vs an independent float64 reference, gating, aux losses, training."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import hydra
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from torch import Tensor, nn

from rails.batch import SequenceBatch
from rails.config import config_dir
from rails.models.encoders.sasrec import SASRec
from rails.models.losses import SampledSoftmaxLoss, UniformNegatives
from rails.models.retrieval_module import RetrievalModule
from rails.models.similarity import DotProductSimilarity, MoLItemState, MoLQueryState, MoLSimilarity
from rails.models.similarity.mol_gating import SoftmaxDropoutMixer, mutual_information_loss
from rails.train import run
from tests.conftest import TINY_OVERRIDES, compose_config, shrink
from tests.test_mol_gpu import D_P, D_Q, D_X, HASH, P_Q, P_X, make_head, make_inputs, reference_scores, unit


@pytest.fixture
def inputs() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return make_inputs()


def test_score_matches_float64_reference(inputs) -> None:
    q, items, _, user_ids = inputs
    head = make_head().eval()
    expected, _ = reference_scores(head, q, items, user_ids)
    query_state = head.encode_queries(q, user_ids=user_ids)
    item_state = head.encode_items(items)
    torch.testing.assert_close(head.score(query_state, item_state), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(head(q, items, user_ids=user_ids).scores, expected, rtol=1e-10, atol=1e-10)


def test_score_pairs_matches_float64_reference(inputs) -> None:
    q, _, per_query, user_ids = inputs
    head = make_head().eval()
    expected, _ = reference_scores(head, q, per_query, user_ids)
    query_state = head.encode_queries(q, user_ids=user_ids)
    item_state = head.encode_items(per_query)
    torch.testing.assert_close(head.score_pairs(query_state, item_state), expected, rtol=1e-10, atol=1e-10)
    output = head(q, per_query, user_ids=user_ids)
    torch.testing.assert_close(output.scores, expected, rtol=1e-10, atol=1e-10)
    assert output.aux_losses == {}  # aux losses only in training mode


def test_training_forward_without_dropout_matches_reference_and_aux_losses(inputs) -> None:
    q, _, per_query, user_ids = inputs
    head = make_head(softmax_dropout=0.0, item_dropout=0.0, uid_dropout=0.0).train()
    expected, weights = reference_scores(head, q, per_query, user_ids)
    output = head(q, per_query, user_ids=user_ids)
    torch.testing.assert_close(output.scores, expected, rtol=1e-10, atol=1e-10)
    assert set(output.aux_losses) == {"mi_loss", "uid_embedding_l2_norm"}
    flat = weights.reshape(-1, P_Q * P_X)
    marginal = flat.mean(0)
    marginal_entropy = -(marginal * torch.log(marginal + 1e-6)).sum()
    conditional_entropy = -(flat * torch.log(flat + 1e-6)).sum(-1).mean()
    expected_mi = conditional_entropy - marginal_entropy
    torch.testing.assert_close(output.aux_losses["mi_loss"].double(), expected_mi, rtol=1e-6, atol=1e-8)
    uid = head.uid_components.tables[0].weight[user_ids % HASH + 1]
    torch.testing.assert_close(
        output.aux_losses["uid_embedding_l2_norm"].double(), (uid**2).sum(-1).mean(), rtol=1e-6, atol=1e-8
    )


def test_forward_state_with_deduplicated_items_equals_forward(inputs) -> None:
    q, items, _, user_ids = inputs
    head = make_head(softmax_dropout=0.0, item_dropout=0.0, uid_dropout=0.0).train()
    ids = torch.tensor([[0, 3, 3, 1], [4, 4, 4, 0], [2, 1, 0, 3]])  # sampled corpus positions (B, R)
    direct = head(q, items[ids], user_ids=user_ids)
    unique, inverse = ids.unique(return_inverse=True)
    state = head.encode_items(items[unique]).gather(inverse)
    via_state = head.forward_state(q, state, user_ids=user_ids)
    torch.testing.assert_close(via_state.scores, direct.scores, rtol=1e-10, atol=1e-10)
    for name in ("mi_loss", "uid_embedding_l2_norm"):
        torch.testing.assert_close(via_state.aux_losses[name], direct.aux_losses[name])


def test_state_layout(inputs) -> None:
    q, items, per_query, user_ids = inputs
    head = make_head().eval()
    query_state = head.encode_queries(q, user_ids=user_ids)
    assert isinstance(query_state, MoLQueryState) and query_state.lead_shape == (3,)
    assert {k: tuple(v.shape) for k, v in query_state.tensors().items()} == {
        "components": (3, P_Q, D_P),
        "gate": (3, P_Q * P_X),
    }
    for x in (items, per_query):
        state = head.encode_items(x)
        lead = tuple(x.shape[:-1])
        assert isinstance(state, MoLItemState) and state.lead_shape == lead
        assert {k: tuple(v.shape) for k, v in state.tensors().items()} == {
            "components": (*lead, P_X, D_P),
            "gate": (*lead, P_Q * P_X),
        }
        norms = torch.linalg.vector_norm(state.components, dim=-1)
        torch.testing.assert_close(norms, torch.ones_like(norms))
    norms = torch.linalg.vector_norm(query_state.components, dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_gating_weights_sum_to_one_eval_and_train(inputs) -> None:
    q, _, per_query, user_ids = inputs
    # At initialisation (no perturbation) the gates are not so sharp that the kept mass after dropout
    # falls under the 1e-6 renormalisation floor.
    head = MoLSimilarity(
        query_dim=D_Q,
        item_dim=D_X,
        num_query_components=4,
        num_item_components=4,
        component_dim=D_P,
        query_hidden_dim=9,
        uid_hash_sizes=[HASH],
        softmax_dropout=0.3,
    ).double()
    torch.manual_seed(0)
    for training in (False, True):
        head.train(training)
        query_state = head.encode_queries(q, user_ids=user_ids)
        item_state = head.encode_items(per_query)
        _, weights = head._mix(
            query_state.components, query_state.gate, item_state.components, item_state.gate
        )
        sums = weights.sum(-1)
        torch.testing.assert_close(sums, torch.ones_like(sums))
        assert (weights >= 0).all()
        if training:  # dropout really removed pairs before the renormalisation
            assert (weights == 0).any()
        else:
            assert (weights > 0).all()


def test_softmax_dropout_renormalises() -> None:
    mixer = SoftmaxDropoutMixer(dropout=0.5).train()
    torch.manual_seed(0)
    weights = mixer(torch.randn(200, 16))
    kept = weights.sum(-1)
    torch.testing.assert_close(kept, torch.ones_like(kept))
    assert 0.3 < (weights == 0).float().mean() < 0.7
    with pytest.raises(ValueError, match="softmax_dropout"):
        SoftmaxDropoutMixer(dropout=1.0)


class _AsOneComponent(nn.Module):
    """(..., D) -> (..., 1, D): the embedding itself is the only component."""

    def forward(self, x: Tensor) -> Tensor:
        return x.unsqueeze(-2)


def test_single_component_equals_scaled_dot_product(inputs) -> None:
    q, items, per_query, _ = inputs
    head = MoLSimilarity(
        query_dim=D_Q,
        item_dim=D_Q,
        num_query_components=1,
        num_item_components=1,
        component_dim=D_Q,
        query_components=_AsOneComponent(),
        item_components=_AsOneComponent(),
    ).double()
    dot = DotProductSimilarity(normalize=True)
    items = torch.randn(5, D_Q, dtype=torch.float64)
    per_query = torch.randn(3, 4, D_Q, dtype=torch.float64)
    head.mixer.dropout.p = 0.0  # with one pair, softmax dropout would zero whole rows
    for training in (False, True):  # one pair: pi == 1 whatever the gate
        head.train(training)
        for x in (items, per_query):
            torch.testing.assert_close(head(q, x).scores, dot(q, x).scores / 0.05, rtol=1e-10, atol=1e-10)


def test_constant_gate_averages_the_logits(inputs) -> None:
    q, items, _, user_ids = inputs
    head = make_head().eval()
    with torch.no_grad():  # zero output layers: every gate logit is SiLU(0) = 0, so pi is uniform
        for part in (head.gating.query_part, head.gating.item_part, head.gating.qi_part):
            part[3].weight.zero_()
            if part[3].bias is not None:
                part[3].bias.zero_()
    query_state = head.encode_queries(q, user_ids=user_ids)
    item_state = head.encode_items(items)
    cosines = torch.einsum("bid,xjd->bxij", query_state.components, item_state.components)
    expected = cosines.mean(dim=(-1, -2)) / 0.05
    torch.testing.assert_close(head.score(query_state, item_state), expected, rtol=1e-10, atol=1e-10)


def test_mi_loss_hand_computed() -> None:
    eps = 1e-6
    # One-hot gates spread over both pairs: H_marg = ln 2, H_cond = 0 -> -ln 2.
    one_hot = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert mutual_information_loss(one_hot, eps).item() == pytest.approx(-math.log(2), abs=1e-5)
    # Uniform gates: H_marg = H_cond = ln 2 -> 0.
    uniform = torch.full((3, 1, 2), 0.5, dtype=torch.float64)
    assert mutual_information_loss(uniform, eps).item() == pytest.approx(0.0, abs=1e-5)
    # [.75, .25] and [.25, .75]: u = [.5, .5]; H_cond = -(.75 ln .75 + .25 ln .25) = 0.562335.
    mixed = torch.tensor([[0.75, 0.25], [0.25, 0.75]], dtype=torch.float64)
    assert mutual_information_loss(mixed, eps).item() == pytest.approx(0.562335 - math.log(2), abs=1e-5)
    # Everyone on pair 0: H_marg = H_cond = 0.
    collapsed = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    assert mutual_information_loss(collapsed, eps).item() == pytest.approx(0.0, abs=1e-5)


def test_gradients_reach_every_parameter(inputs) -> None:
    q, items, per_query, user_ids = inputs
    head = make_head().train()
    torch.manual_seed(0)
    total = torch.zeros((), dtype=torch.float64)
    for x in (items, per_query):
        output = head(q, x, user_ids=user_ids)
        total = total + output.scores.sum() + sum(output.aux_losses.values())
    total.backward()
    for name, param in head.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


def test_uid_hashing_and_missing_user_ids(inputs) -> None:
    q, items, _, _ = inputs
    head = make_head().eval()
    user_ids = torch.tensor([0, HASH - 1, HASH, 2 * HASH + 3, -1])
    assert head.uid_components.rows(user_ids, 0).tolist() == [1, HASH, 1, 4, HASH]
    same_q = q[:1].expand(5, -1)
    components = head.encode_queries(same_q, user_ids=user_ids).components
    torch.testing.assert_close(components[0], components[2])  # 0 and H collide
    assert not torch.allclose(components[0, -1], components[1, -1])  # the uid component differs
    torch.testing.assert_close(components[0, :-1], components[1, :-1])  # the MLP components do not
    with pytest.raises(ValueError, match="user_ids"):
        head.encode_queries(q)
    with pytest.raises(ValueError, match="uid_hash_sizes"):
        MoLSimilarity(query_dim=4, item_dim=4, num_query_components=1, uid_hash_sizes=[5])


def test_replacement_component_shape_is_checked() -> None:
    head = MoLSimilarity(
        query_dim=8, item_dim=4, num_query_components=2, component_dim=4, query_components=_AsOneComponent()
    )
    with pytest.raises(ValueError, match="query_components"):
        head.encode_queries(torch.randn(2, 8))


def test_lm_style_flat_components() -> None:
    """A flat (B, P*D) vector of P token states, reshaped by a replacement module, scores like the reference."""
    head = MoLSimilarity(
        query_dim=3 * 4,
        item_dim=2 * 4,
        num_query_components=3,
        num_item_components=2,
        component_dim=4,
        query_components=nn.Unflatten(-1, (3, 4)),
        item_components=nn.Unflatten(-1, (2, 4)),
    ).eval()
    q, x = torch.randn(2, 12), torch.randn(5, 8)
    f = unit(q.view(2, 3, 4))
    g = unit(x.view(5, 2, 4))
    state = head.encode_queries(q)
    torch.testing.assert_close(state.components, f)
    torch.testing.assert_close(head.encode_items(x).components, g)


def test_chunked_score_equals_unchunked(inputs) -> None:
    q, _, _, user_ids = inputs
    items = torch.randn(37, D_X, dtype=torch.float64)
    per_query = torch.randn(3, 11, D_X, dtype=torch.float64)
    head = make_head().eval()
    query_state = head.encode_queries(q, user_ids=user_ids)
    with torch.no_grad():
        full = head.score(query_state, head.encode_items(items))
        full_pairs = head.score_pairs(query_state, head.encode_items(per_query))
        head.max_score_elements = 3 * 10 * 4  # 4 items per chunk
        torch.testing.assert_close(head.score(query_state, head.encode_items(items)), full)
        torch.testing.assert_close(head.score_pairs(query_state, head.encode_items(per_query)), full_pairs)


def test_bf16_autocast_close_to_fp32(inputs) -> None:
    q, items, _, user_ids = inputs
    head = make_head(perturb=False).float().eval()  # a sharp (perturbed) gate can flip pairs on bf16 noise
    fp32 = head(q.float(), items.float(), user_ids=user_ids).scores
    head.autocast_bf16 = head.eval_autocast_bf16 = True  # an eval-mode head: both flags
    bf16 = head(q.float(), items.float(), user_ids=user_ids).scores
    torch.testing.assert_close(bf16.float(), fp32, rtol=0.02, atol=0.3)  # scores lie in [-20, 20]
    assert (bf16.float() - fp32).abs().mean() < 0.1
    assert bf16.dtype == torch.bfloat16  # autocast really ran


def test_effective_initialisation() -> None:
    head = MoLSimilarity(query_dim=50, item_dim=50, uid_hash_sizes=[6040])
    glu = head.query_components.net[1]
    assert glu.bias.shape == (1, 1024)
    assert glu.bias.std().item() == pytest.approx(math.sqrt(2 / (1 + 1024)), rel=0.15)  # xavier_normal
    assert head.item_components.proj.bias.abs().sum() == 0
    assert head.gating.qi_part[3].bias.abs().sum() == 0
    out_bias = head.query_components.output_layer.bias
    assert out_bias.abs().sum() > 0 and out_bias.abs().max() <= 1 / math.sqrt(512)  # PyTorch default kept
    table = head.uid_components.tables[0].weight
    assert table[0].abs().sum() > 0  # padding row re-initialised too (never indexed)


# ------------------------------------------------------------------------------- training integration
def _tiny_module(corpus: list[int]) -> RetrievalModule:
    encoder = SASRec(
        dim=8,
        max_seq_len=6,
        num_blocks=1,
        num_heads=1,
        ffn_hidden_dim=8,
        dropout=0.0,
        output_norm="layer_norm",
    )
    head = MoLSimilarity(
        query_dim=8,
        item_dim=8,
        num_query_components=2,
        num_item_components=2,
        component_dim=4,
        query_hidden_dim=8,
        uid_hash_sizes=[10],
        gating_query_hidden_dim=4,
        gating_item_hidden_dim=4,
        gating_qi_hidden_dim=4,
    )
    module = RetrievalModule(
        encoder,
        head,
        SampledSoftmaxLoss(temperature=1.0),
        UniformNegatives(num_negatives=5),
        optimizer=functools.partial(torch.optim.AdamW),
        num_items=10,
        item_dim=8,
        aux_loss_weights={"mi_loss": 1e-3, "uid_embedding_l2_norm": 0.1},
    )
    module.set_corpus(torch.tensor(corpus))
    return module


def _batch_of(item: int) -> SequenceBatch:
    history = torch.tensor([[item, item, item, 0, 0, 0], [item, item, 0, 0, 0, 0]])
    lengths = torch.tensor([3, 2])
    return SequenceBatch(
        user_ids=torch.tensor([1, 2]),
        history_ids=history,
        history_timestamps=torch.arange(12).view(2, 6) * (history != 0),
        history_ratings=(history != 0).float(),
        lengths=lengths,
        target_ids=torch.tensor([item, item]),
        target_timestamps=torch.tensor([100, 100]),
        target_ratings=torch.ones(2),
    )


def test_positive_collisions_are_masked_among_negatives() -> None:
    torch.manual_seed(0)
    module = _tiny_module(corpus=[3])  # every sampled negative IS the positive
    total, parts = module.training_loss(_batch_of(3))
    assert parts["sampled_softmax"].item() < 1e-6  # unmasked it would be about log(1 + R) = log 6
    assert set(parts) == {"sampled_softmax", "mi_loss", "uid_embedding_l2_norm"}
    expected = parts["sampled_softmax"] + 1e-3 * parts["mi_loss"] + 0.1 * parts["uid_embedding_l2_norm"]
    torch.testing.assert_close(total, expected)
    other = _tiny_module(corpus=[4, 5])  # no collisions: a real loss
    assert other.training_loss(_batch_of(3))[1]["sampled_softmax"].item() > 0.1


MOL_RUN_OVERRIDES = [
    "model/similarity=mol",
    "model.similarity.component_dim=8",
    "model.similarity.query_hidden_dim=16",
    "model.similarity.gating_query_hidden_dim=8",
    "model.similarity.gating_item_hidden_dim=8",
    "model.similarity.gating_qi_hidden_dim=8",
    "model.loss.temperature=1.0",
    "model.encoder.output_norm=layer_norm",
    "++model.aux_loss_weights={mi_loss: 0.001, uid_embedding_l2_norm: 0.1}",
]


def test_one_epoch_training_with_mol(tmp_path: Path) -> None:
    cfg = shrink(compose_config("train", TINY_OVERRIDES + MOL_RUN_OVERRIDES), tmp_path)
    try:
        metrics = run(cfg)
    finally:
        GlobalHydra.instance().clear()
    for key in ("val/hr@10", "val/ndcg@10", "test/hr@10", "test/ndcg@10", "test/mrr"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.parametrize(
    ("name", "dims", "uid"),
    [("mol", (8, 4, 64), [6040]), ("mol_ml_20m", (8, 4, 128), [16384]), ("mol_amzn_books", (8, 8, 32), [])],
)
def test_similarity_configs_instantiate(name: str, dims: tuple[int, int, int], uid: list[int]) -> None:
    cfg = compose_config("train", [f"model/similarity={name}", "model.item_dim=12"])
    GlobalHydra.instance().clear()
    head = hydra.utils.instantiate(cfg.model.similarity)
    assert isinstance(head, MoLSimilarity)
    assert (head.num_query_components, head.num_item_components, head.component_dim) == dims
    assert (head.uid_components.hash_sizes if head.uid_components is not None else []) == uid
    assert head.gating.query_part[1].in_features == 12  # query_dim follows model.item_dim


EXPERIMENTS = {
    # name: (data config, encoder config, D, P_Q x P_X x d_P, R, aux weights)
    "ml_1m_sasrec_mol": ("ml_1m", "sasrec", 50, (8, 4, 64), 128, {"mi_loss", "uid_embedding_l2_norm"}),
    "ml_1m_hstu_large_mol": (
        "ml_1m",
        "hstu_large",
        50,
        (8, 4, 64),
        128,
        {"mi_loss", "uid_embedding_l2_norm"},
    ),
    "ml_20m_sasrec_mol": ("ml_20m", "sasrec", 256, (8, 4, 128), 128, {"mi_loss", "uid_embedding_l2_norm"}),
    "ml_20m_hstu_large_mol": (
        "ml_20m",
        "hstu_large",
        256,
        (8, 4, 128),
        128,
        {"mi_loss", "uid_embedding_l2_norm"},
    ),
    "amzn_books_sasrec_mol": ("amzn_books", "sasrec", 64, (8, 8, 32), 512, {"mi_loss"}),
    "amzn_books_hstu_large_mol": ("amzn_books", "hstu_large", 64, (8, 8, 32), 512, {"mi_loss"}),
}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_presets_compose_and_instantiate(name: str) -> None:
    data, encoder, dim, dims, negatives, aux = EXPERIMENTS[name]
    missing = [
        p
        for p in (f"data/{data}.yaml", f"model/encoder/{encoder}.yaml")
        if not (Path(config_dir()) / p).is_file()
    ]
    if missing:
        pytest.skip(f"configs written by other issues are not there yet: {missing}")
    cfg = compose_config("train", [f"experiment={name}"])
    GlobalHydra.instance().clear()
    model_cfg = OmegaConf.to_container(cfg.model, resolve=False)
    assert model_cfg["negatives"]["num_negatives"] == negatives
    model = hydra.utils.instantiate(cfg.model, num_items=20)
    assert model.loss.temperature == 1.0  # the MoL head's recipe (model/similarity/mol.yaml)
    assert model.encoder.output_norm.kind == "layer_norm"
    assert set(model.aux_loss_weights) == aux
    head = model.similarity
    assert (head.num_query_components, head.num_item_components, head.component_dim) == dims
    assert model.hparams.item_dim == dim
    out = head(torch.randn(2, dim), torch.randn(2, 3, dim), user_ids=torch.tensor([1, 2]))
    assert out.scores.shape == (2, 3)
