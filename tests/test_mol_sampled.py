"""The one-call sampled-softmax training path (``forward_sampled``) vs the spec's two head calls (§3.2).

With every dropout at 0 the loss and every gradient equal the two-call form (positive call on (M, 1, D)
items, negatives call on (M, R, D) items, each pair encoded on its own) to float64 tolerance, for both item
paths (factorised default projection, generic replacement components) and both negative tables (whole item
table, distinct ids). With dropout, it acts only in training and the positive column draws its own query-side
dropout, as a separate call would; the auxiliary losses come from the positive column only.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from rails.models.encoders.hstu import HSTU
from rails.models.losses import SampledSoftmaxLoss, UniformNegatives
from rails.models.retrieval_module import RetrievalModule
from rails.models.similarity import DotProductSimilarity, MoLSimilarity
from rails.models.similarity.mol_gating import mutual_information_loss
from rails.models.similarity.mol_sampled import encode_sampled_items, mix_sampled
from tests.test_mol_paths import _batch

NUM_ITEMS, DIM, SEQ, R = 12, 8, 6, 7


class _TwoComponents(nn.Module):
    """A replacement item component function ((..., D) -> (..., 2, D/2)): forces the generic path."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(DIM, DIM)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.linear(x)).unflatten(-1, (2, DIM // 2))


def _module(dropout: float = 0.0, head: str = "mol", num_negatives: int = R) -> RetrievalModule:
    torch.manual_seed(0)
    encoder = HSTU(
        dim=DIM, max_seq_len=SEQ, num_blocks=1, num_heads=1, qk_dim=4, v_dim=4, dropout=0.0,
        linear_dropout=0.0, output_norm="layer_norm", attention_impl="torch",
    )  # fmt: skip
    if head == "dot":
        similarity: nn.Module = DotProductSimilarity()
        weights: dict[str, float] = {}
    else:
        similarity = MoLSimilarity(
            query_dim=DIM, item_dim=DIM, num_query_components=3, num_item_components=2,
            component_dim={"mol": 4, "mol_identity": DIM, "mol_residual": DIM}.get(head, DIM // 2),
            query_hidden_dim=8, uid_hash_sizes=[5], identity_components=head == "mol_identity",
            residual_components=head == "mol_residual",
            uid_dropout=dropout, item_dropout=dropout, softmax_dropout=dropout, gating_query_hidden_dim=6,
            gating_item_hidden_dim=6, gating_qi_hidden_dim=6,
            item_components=_TwoComponents() if head == "mol_generic" else None,
        )  # fmt: skip
        weights = {"mi_loss": 1e-3, "uid_embedding_l2_norm": 0.1}
    module = RetrievalModule(
        encoder, similarity, SampledSoftmaxLoss(temperature=1.0), UniformNegatives(num_negatives),
        optimizer=functools.partial(torch.optim.AdamW), num_items=NUM_ITEMS, item_dim=DIM,
        aux_loss_weights=weights,
    )  # fmt: skip
    with torch.no_grad():
        module.items.table.weight[1:].normal_()
        for param in module.similarity.parameters():
            param.add_(0.2 * torch.randn_like(param))  # non-zero biases, non-uniform gates
    module.set_corpus(torch.arange(1, NUM_ITEMS))
    return module.double().train()


def _two_call_loss(module: RetrievalModule, batch, negative_ids: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """The spec §3.2 form: positive call (M, 1, D), negatives call (M, R, D), aux from the positive call."""
    per_position = module.embed_sequences(batch)
    next_ids = batch.next_ids()
    supervised = batch.valid_mask & (next_ids != 0)
    queries, positives = per_position[supervised], next_ids[supervised]
    user_ids = batch.user_ids[:, None].expand_as(next_ids)[supervised]
    head = module.similarity
    positive = head(queries, module.items(positives)[:, None, :], user_ids=user_ids)
    negative = head(queries, module.items(negative_ids), user_ids=user_ids)
    main = module.loss(positive.scores[:, 0], negative.scores, collisions=negative_ids == positives[:, None])
    return module.weighted_total(main, positive.aux_losses)


def _loss_and_grads(module: RetrievalModule, negative_ids: Tensor, two_calls: bool):
    module.zero_grad(set_to_none=True)
    module.negatives.forward = lambda num_rows, corpus, positives=None: negative_ids  # type: ignore[method-assign]
    batch = _batch()
    total, parts = _two_call_loss(module, batch, negative_ids) if two_calls else module.training_loss(batch)
    total.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    return total.detach(), {k: v.detach() for k, v in parts.items()}, grads


@pytest.mark.parametrize("head", ["mol", "mol_generic", "mol_identity", "mol_residual", "dot"])
@pytest.mark.parametrize("num_negatives", [R, 1])  # 13 x 7 draws >= 12 rows: whole table; 13 x 1: unique ids
def test_one_call_equals_two_calls_without_dropout(head: str, num_negatives: int) -> None:
    module = _module(dropout=0.0, head=head, num_negatives=num_negatives)
    gen = torch.Generator().manual_seed(5)
    m = int((_batch().valid_mask & (_batch().next_ids() != 0)).sum())
    negative_ids = torch.randint(1, NUM_ITEMS, (m, num_negatives), generator=gen)
    negative_ids[0, 0] = _batch().next_ids()[0, 0]  # one collision with the positive
    one_call = _loss_and_grads(module, negative_ids, two_calls=False)
    _assert_same_step(one_call, _loss_and_grads(module, negative_ids, two_calls=True))


def _assert_same_step(step, expected) -> None:
    """Two (loss, aux losses, gradients) of :func:`_loss_and_grads` agree to float64 tolerance."""
    (total, parts, grads), (ref_total, ref_parts, ref_grads) = step, expected
    torch.testing.assert_close(total, ref_total, rtol=1e-10, atol=1e-12)
    assert parts.keys() == ref_parts.keys()
    for name in parts:
        torch.testing.assert_close(parts[name], ref_parts[name], rtol=1e-10, atol=1e-12)
    assert grads.keys() == ref_grads.keys() and len(grads) > 5
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-9, atol=1e-11, msg=name)


def _sampled(module: RetrievalModule, positions: Tensor, seed: int):
    head = module.similarity
    batch = _batch()
    with torch.no_grad():
        queries = module.embed_queries(batch)
        torch.manual_seed(seed)
        return head.forward_sampled(
            queries, module.items(torch.arange(NUM_ITEMS)), positions, user_ids=batch.user_ids
        )


def test_dropout_acts_only_in_training_and_positive_column_draws_its_own() -> None:
    module = _module(dropout=0.4)
    head = module.similarity
    positions = torch.tensor([[3, 3, 3, 5], [4, 4, 4, 9], [7, 7, 7, 1]])  # columns 0-2: the same item
    head.eval()
    eval_out = _sampled(module, positions, 0)
    with torch.no_grad():
        batch = _batch()
        qs = head.encode_queries(module.embed_queries(batch), user_ids=batch.user_ids)
        expected = head.score_pairs(qs, head.encode_items(module.items(positions)))
    torch.testing.assert_close(eval_out.scores, expected, rtol=1e-12, atol=1e-12)
    assert eval_out.aux_losses == {}
    head.train()
    train_a, train_b = _sampled(module, positions, 1), _sampled(module, positions, 2)
    assert not torch.allclose(train_a.scores, eval_out.scores)
    assert not torch.allclose(train_a.scores, train_b.scores)
    # only the uid dropout on: the negatives share one draw, the positive column has its own
    head.mixer.dropout.p = 0.0
    head.item_components.dropout.p = 0.0
    out = _sampled(module, positions, 3)
    torch.testing.assert_close(out.scores[:, 1], out.scores[:, 2], rtol=1e-12, atol=1e-12)
    assert (out.scores[:, 0] - out.scores[:, 1]).abs().max() > 1e-3


def test_softmax_dropout_is_drawn_per_element() -> None:
    module = _module(dropout=0.0)
    head = module.similarity
    head.mixer.dropout.p = 0.5
    positions = torch.tensor([[3, 3, 3], [4, 4, 4], [7, 7, 7]])
    out = _sampled(module, positions, 4)
    assert (out.scores[:, 1] - out.scores[:, 2]).abs().max() > 1e-3  # same pair, independent draws


def test_aux_losses_come_from_the_positive_column_only() -> None:
    module = _module(dropout=0.0)
    head = module.similarity
    positions = torch.tensor([[3, 1, 2, 5], [4, 6, 8, 9], [7, 10, 11, 1]])
    batch = _batch()
    with torch.no_grad():
        queries = module.embed_queries(batch)
        out = head.forward_sampled(
            queries, module.items(torch.arange(NUM_ITEMS)), positions, user_ids=batch.user_ids
        )
        positive = head(queries, module.items(positions[:, :1]), user_ids=batch.user_ids)
        everything = head(queries, module.items(positions), user_ids=batch.user_ids)
    torch.testing.assert_close(out.scores, everything.scores, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.aux_losses["mi_loss"], positive.aux_losses["mi_loss"])
    assert not torch.allclose(out.aux_losses["mi_loss"], everything.aux_losses["mi_loss"])
    uid = head.uid_components.tables[0].weight[batch.user_ids % 5 + 1]
    torch.testing.assert_close(out.aux_losses["uid_embedding_l2_norm"].double(), (uid**2).sum(-1).mean())
    assert mutual_information_loss(torch.full((3, 1, 6), 1 / 6)).abs() < 1e-5


def test_factorised_item_rows_reproduce_the_components() -> None:
    module = _module(dropout=0.0).eval()
    head = module.similarity
    items = encode_sampled_items(head, module.items(torch.arange(NUM_ITEMS)))
    state = head.encode_items(module.items(torch.arange(NUM_ITEMS)))
    assert items.rows.shape == (NUM_ITEMS, DIM + 1) and items.inv_norms.shape == (NUM_ITEMS, 2)
    proj = head.item_components.proj
    raw = (items.rows[:, :-1] @ proj.weight.T + proj.bias).unflatten(-1, (2, 4))
    torch.testing.assert_close(raw * items.inv_norms[..., None], state.components, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(items.gate, state.gate)


class _CountIndexing(TorchDispatchMode):
    """Counts the advanced-indexing gathers (aten.index.Tensor) run under it, with their input shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.index.Tensor:
            self.shapes.append(tuple(args[0].shape))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("head", ["mol", "mol_generic"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])  # 0.3: the positive column has its own query-side draw
def test_one_gather_of_the_item_side_per_step(head: str, dropout: float) -> None:
    """rows, inverse norms and item gate of every (query, item) pair come from one gather of one table."""
    module = _module(dropout=dropout, head=head)
    batch = _batch()
    queries = module.embed_queries(batch)
    positions = torch.tensor([[3, 1, 2, 5], [4, 6, 8, 9], [7, 10, 11, 1]])
    counter = _CountIndexing()
    with counter:
        out = module.similarity.forward_sampled(
            queries, module.items(torch.arange(NUM_ITEMS)), positions, user_ids=batch.user_ids
        )
    assert out.scores.shape == (3, 4)
    width = (DIM + 1 + 2 if head == "mol" else 2 * (DIM // 2)) + 6  # rows (+ inverse norms), gate of P = 6
    assert counter.shapes == [(NUM_ITEMS, width)]


def test_bad_positions_are_refused() -> None:
    module = _module()
    batch = _batch()
    queries = module.embed_queries(batch)
    with pytest.raises(ValueError, match="positions must be"):
        module.similarity.forward_sampled(
            queries, module.items(torch.arange(4)), torch.zeros(2, 3, dtype=torch.long)
        )


def test_folded_renormalisation_equals_the_mixer_with_the_same_dropout_draw() -> None:
    module = _module(dropout=0.0)
    head = module.similarity
    head.mixer.dropout.p = 0.6  # high enough that some rows keep little mass
    gen = torch.Generator().manual_seed(6)
    query_gate, item_gate = torch.randn(4, 6, generator=gen), torch.randn(4, 5, 6, generator=gen)
    logits = 5 * torch.randn(4, 5, 6, generator=gen)
    query_gate, item_gate, logits = query_gate.double(), item_gate.double(), logits.double()
    torch.manual_seed(7)
    scores, positive_weights = mix_sampled(head, query_gate, item_gate, logits)
    torch.manual_seed(7)  # the same softmax-dropout draw
    expected, weights = head._mix_logits(query_gate, item_gate, logits)
    assert (weights == 0).any()
    torch.testing.assert_close(scores, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(positive_weights, weights[:, :1], rtol=1e-12, atol=1e-12)
    head.eval()
    scores, positive_weights = mix_sampled(head, query_gate, item_gate, logits)
    expected, weights = head._mix_logits(query_gate, item_gate, logits)
    torch.testing.assert_close(scores, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(positive_weights, weights[:, :1])


def test_joint_loss_equals_the_two_part_loss() -> None:
    loss = SampledSoftmaxLoss(temperature=0.5)
    gen = torch.Generator().manual_seed(8)
    scores = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    collisions = torch.rand(5, 3, generator=gen) < 0.3
    weights = torch.rand(5, generator=gen, dtype=torch.float64)
    for w in (None, weights):
        torch.testing.assert_close(
            loss.joint(scores, collisions, w), loss(scores[:, 0], scores[:, 1:], collisions, w)
        )


@pytest.mark.parametrize("head", ["mol", "mol_generic", "mol_residual"])
@pytest.mark.parametrize("chunk", [1, 3])  # 1: the positive column alone, then one column at a time
def test_checkpointed_columns_equal_one_call_without_dropout(head: str, chunk: int) -> None:
    """Scoring [positive | negatives] a few columns at a time under activation checkpointing gives the loss,
    the auxiliary losses and every gradient of the one-call step (float64)."""
    module = _module(dropout=0.0, head=head)
    m = int((_batch().valid_mask & (_batch().next_ids() != 0)).sum())
    negative_ids = torch.randint(1, NUM_ITEMS, (m, R), generator=torch.Generator().manual_seed(6))
    one_call = _loss_and_grads(module, negative_ids, two_calls=False)
    module.similarity.sampled_checkpoint_columns = chunk
    _assert_same_step(_loss_and_grads(module, negative_ids, two_calls=False), one_call)


def test_checkpointed_columns_replay_their_dropout_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every dropout on, the checkpointed step's gradients are those of the same chunks scored without
    checkpointing under the same seed: the backward's recomputation replays each chunk's draws."""
    module = _module(dropout=0.3)
    module.similarity.sampled_checkpoint_columns = 3
    m = int((_batch().valid_mask & (_batch().next_ids() != 0)).sum())
    negative_ids = torch.randint(1, NUM_ITEMS, (m, R), generator=torch.Generator().manual_seed(7))
    torch.manual_seed(11)
    checkpointed = _loss_and_grads(module, negative_ids, two_calls=False)
    with monkeypatch.context() as patch:  # the same chunks, kept in memory instead of recomputed
        patch.setattr(torch.utils.checkpoint, "checkpoint", lambda fn, *args, use_reentrant: fn(*args))
        torch.manual_seed(11)
        _assert_same_step(checkpointed, _loss_and_grads(module, negative_ids, two_calls=False))
    torch.manual_seed(12)  # and the draws are live: another seed, another loss
    assert not torch.allclose(_loss_and_grads(module, negative_ids, two_calls=False)[0], checkpointed[0])


def test_checkpointed_columns_are_a_training_setting() -> None:
    module = _module(dropout=0.0)
    head = module.similarity
    positions = torch.tensor([[3, 1, 2, 5], [4, 6, 8, 9], [7, 10, 11, 1]])
    expected = _sampled(module, positions, 0).scores
    head.sampled_checkpoint_columns = 2
    torch.testing.assert_close(_sampled(module, positions, 0).scores, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="sampled_checkpoint_columns"):
        MoLSimilarity(query_dim=DIM, item_dim=DIM, sampled_checkpoint_columns=-1)
