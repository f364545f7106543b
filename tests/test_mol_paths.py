"""MoL training path vs evaluation path inside a real RetrievalModule (issue #4 follow-up, mol_investigation).

The evaluator (`RetrievalEvaluator`) scores the corpus with ``encode_items`` once + ``score``; training uses
``forward`` for positives and ``forward_state`` on a gathered, de-duplicated item state for negatives. In
eval mode all of them must give the same numbers; dropout (softmax, item, user-id) must act only in training,
and the auxiliary losses must come from the positive call alone.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor

from rails.batch import SequenceBatch
from rails.models.encoders import SequenceHistory
from rails.models.encoders.hstu import HSTU
from rails.models.losses import SampledSoftmaxLoss, UniformNegatives
from rails.models.retrieval_module import RetrievalModule
from rails.models.similarity import MoLSimilarity
from rails.models.similarity.mol_gating import mutual_information_loss

NUM_ITEMS, DIM, SEQ = 12, 8, 6


def _module(dropout: float) -> RetrievalModule:
    """Tiny HSTU + MoL (one uid component); ``dropout`` sets every MoL and encoder dropout."""
    torch.manual_seed(0)
    encoder = HSTU(
        dim=DIM,
        max_seq_len=SEQ,
        num_blocks=1,
        num_heads=1,
        qk_dim=4,
        v_dim=4,
        dropout=dropout,
        linear_dropout=dropout,
        output_norm="layer_norm",
        attention_impl="torch",
    )
    head = MoLSimilarity(
        query_dim=DIM,
        item_dim=DIM,
        num_query_components=3,
        num_item_components=2,
        component_dim=4,
        query_hidden_dim=8,
        uid_hash_sizes=[5],
        uid_dropout=dropout,
        item_dropout=dropout,
        softmax_dropout=dropout,
        gating_query_hidden_dim=6,
        gating_item_hidden_dim=6,
        gating_qi_hidden_dim=6,
    )
    module = RetrievalModule(
        encoder,
        head,
        SampledSoftmaxLoss(temperature=1.0),
        UniformNegatives(num_negatives=7),
        optimizer=functools.partial(torch.optim.AdamW),
        num_items=NUM_ITEMS,
        item_dim=DIM,
        aux_loss_weights={"mi_loss": 1e-3, "uid_embedding_l2_norm": 0.1},
    )
    with torch.no_grad():  # move the item table off its tiny init so components and gates are not degenerate
        module.items.table.weight[1:].normal_()
    module.set_corpus(torch.arange(1, NUM_ITEMS))
    return module.double()


def _batch() -> SequenceBatch:
    history = torch.tensor([[3, 5, 7, 2, 0, 0], [9, 4, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    lengths = torch.tensor([4, 2, 6])
    return SequenceBatch(
        user_ids=torch.tensor([1, 7, 12]),
        history_ids=history,
        history_timestamps=torch.cumsum(torch.full_like(history, 3600), dim=1) * (history != 0),
        history_ratings=(history != 0).double(),
        lengths=lengths,
        target_ids=torch.tensor([8, 10, 11]),
        target_timestamps=torch.tensor([30000, 30000, 30000]),
        target_ratings=torch.ones(3, dtype=torch.float64),
    )


def _training_path_scores(module: RetrievalModule, queries: Tensor, user_ids: Tensor) -> Tensor:
    """Scores (B, X) of every corpus item through ``forward_state`` on a gathered de-duplicated state."""
    corpus = module.corpus_ids
    head = module.similarity
    ids = corpus[None, :].expand(queries.shape[0], -1)
    unique, inverse = ids.unique(return_inverse=True)
    state = head.encode_items(module.embed_items(unique)).gather(inverse)
    return head.forward_state(queries, state, user_ids=user_ids).scores


def test_eval_path_equals_training_paths_in_eval_mode() -> None:
    module = _module(dropout=0.3).eval()
    head = module.similarity
    batch = _batch()
    with torch.no_grad():
        queries = module.embed_queries(batch)
        ctx = module.query_context(batch)
        corpus_state = head.encode_items(module.embed_items(module.corpus_ids))  # what the evaluator builds
        evaluator = head.score(head.encode_queries(queries, **ctx), corpus_state)
        forward = head(queries, module.embed_items(module.corpus_ids), **ctx)
        per_query_items = module.embed_items(module.corpus_ids)[None].expand(len(batch), -1, -1)
        forward_pairs = head(queries, per_query_items, **ctx)
        forward_state = _training_path_scores(module, queries, ctx["user_ids"])
    assert evaluator.shape == (3, NUM_ITEMS - 1)
    assert evaluator.std() > 0.1  # a non-degenerate head, so equality means something
    for other in (forward.scores, forward_pairs.scores, forward_state):
        torch.testing.assert_close(other, evaluator, rtol=1e-12, atol=1e-12)
    assert forward.aux_losses == {} and forward_pairs.aux_losses == {}


def test_dropout_acts_only_in_training() -> None:
    module = _module(dropout=0.3)
    batch = _batch()
    with torch.no_grad():
        module.eval()
        queries = module.embed_queries(batch)
        user_ids = batch.user_ids
        eval_scores = _training_path_scores(module, queries, user_ids)
        module.similarity.train()  # head only: same queries, dropout on inside the head
        torch.manual_seed(1)
        train_a = _training_path_scores(module, queries, user_ids)
        torch.manual_seed(2)
        train_b = _training_path_scores(module, queries, user_ids)
    assert not torch.allclose(train_a, eval_scores) and not torch.allclose(train_a, train_b)
    no_dropout = _module(dropout=0.0)
    with torch.no_grad():
        no_dropout.eval()
        queries = no_dropout.embed_queries(batch)
        eval_scores = _training_path_scores(no_dropout, queries, user_ids)
        no_dropout.similarity.train()
        torch.testing.assert_close(_training_path_scores(no_dropout, queries, user_ids), eval_scores)


def test_aux_losses_come_from_the_positive_call_only() -> None:
    module = _module(dropout=0.0).train()
    batch = _batch()
    torch.manual_seed(3)
    _, parts = module.training_loss(batch)
    next_ids = batch.next_ids()
    supervised = batch.valid_mask & (next_ids != 0)
    queries = module.embed_sequences(batch)[supervised]
    user_ids = batch.user_ids[:, None].expand_as(next_ids)[supervised]
    head = module.similarity
    positive = head(queries, module.embed_items(next_ids[supervised])[:, None, :], user_ids=user_ids)
    torch.testing.assert_close(parts["mi_loss"], positive.aux_losses["mi_loss"])
    torch.testing.assert_close(parts["uid_embedding_l2_norm"], positive.aux_losses["uid_embedding_l2_norm"])
    # the negatives call would give a different MI loss: the test can tell the two calls apart
    negatives = head(queries, module.embed_items(module.corpus_ids), user_ids=user_ids)
    assert not torch.allclose(negatives.aux_losses["mi_loss"], parts["mi_loss"])
    # and the positive-call MI loss is the formula of spec §2.1 on its (M, 1, P) weights
    with torch.no_grad():
        qs = head.encode_queries(queries, user_ids=user_ids)
        items = head.encode_items(module.embed_items(next_ids[supervised])[:, None, :])
        _, weights = head._mix(qs.components, qs.gate, items.components, items.gate)
    torch.testing.assert_close(parts["mi_loss"], mutual_information_loss(weights))


def test_encoder_sees_the_history_never_the_target_ids() -> None:
    module = _module(dropout=0.0).eval()
    batch = _batch()
    other_targets = SequenceBatch(**{**batch.__dict__, "target_ids": torch.tensor([1, 2, 3])})
    with torch.no_grad():
        torch.testing.assert_close(module.embed_sequences(batch), module.embed_sequences(other_targets))
    history = SequenceHistory.of(batch)
    assert not hasattr(history, "target_ids") and torch.equal(history.valid_mask, batch.valid_mask)
    assert torch.equal(history.next_timestamps, batch.next_timestamps())


def test_negative_pool_comes_from_a_corpus_source_datamodule() -> None:
    module = _module(dropout=0.0)
    module.trainer = SimpleNamespace(
        datamodule=SimpleNamespace(corpus_item_ids=lambda: torch.tensor([4, 5, 6]))
    )
    RetrievalModule.on_fit_start(module)
    assert module.corpus_ids.tolist() == [4, 5, 6]
    module.trainer = SimpleNamespace(datamodule=None)  # no corpus source: the pool set before is kept
    RetrievalModule.on_fit_start(module)
    assert module.corpus_ids.tolist() == [4, 5, 6]
    module.set_corpus(torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="CorpusSource"):
        RetrievalModule.on_fit_start(module)
