"""Negative samplers: uniform (per position), in-batch (spec §3.3), shared / full softmax; the shared loss path."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from rails.batch import SequenceBatch
from rails.models.benchmark import random_batch
from rails.models.encoders.sasrec import SASRec
from rails.models.losses.negatives import InBatchNegatives, SharedNegatives, UniformNegatives
from rails.models.losses.sampled_softmax import SampledSoftmaxLoss
from rails.models.retrieval_module import RetrievalModule
from rails.models.similarity.dot_product import DotProductSimilarity
from rails.models.similarity.mol import MoLSimilarity
from tests.conftest import TINY_OVERRIDES, build_model_and_loader, compose_config, shrink


def test_uniform_negatives_are_per_position_corpus_ids() -> None:
    corpus = torch.tensor([3, 5, 7, 11])
    ids = UniformNegatives(16)(6, corpus)
    assert ids.shape == (6, 16) and set(ids.unique().tolist()) <= {3, 5, 7, 11}
    assert not UniformNegatives.shared


def test_in_batch_negatives_come_from_the_distinct_positives_only() -> None:
    torch.manual_seed(0)
    positives = torch.tensor([4, 4, 4, 4, 9, 2])
    ids = InBatchNegatives(2000)(6, torch.arange(1, 100), positives)
    assert ids.shape == (6, 2000)
    assert set(ids.unique().tolist()) == {2, 4, 9}
    # drawn from the distinct set, not by frequency: 4 is 4/6 of the positives but about 1/3 of the draws
    assert abs((ids == 4).float().mean().item() - 1 / 3) < 0.03
    with pytest.raises(ValueError, match="positives"):
        InBatchNegatives(3)(2, torch.arange(5))


def test_shared_negatives_are_distinct_and_whole_corpus_when_null() -> None:
    corpus = torch.arange(10, 30)
    ids = SharedNegatives(8)(5, corpus)
    assert ids.shape == (8,) and ids.unique().numel() == 8 and set(ids.tolist()) <= set(corpus.tolist())
    assert torch.equal(SharedNegatives(None)(5, corpus), corpus)
    assert SharedNegatives.shared
    with pytest.raises(ValueError, match="num_negatives=21 exceeds the corpus size 20"):
        SharedNegatives(21)(5, corpus)
    with pytest.raises(ValueError, match="empty corpus"):
        SharedNegatives(None)(5, torch.zeros(0, dtype=torch.int64))


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_bad_negative_counts_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="num_negatives"):
        SharedNegatives(bad)  # type: ignore[arg-type]
    if isinstance(bad, int):
        with pytest.raises(ValueError, match="num_negatives"):
            InBatchNegatives(bad)


def _module(similarity: torch.nn.Module, negatives: torch.nn.Module, temperature: float) -> RetrievalModule:
    encoder = SASRec(dim=8, max_seq_len=6, num_blocks=1, num_heads=1, ffn_hidden_dim=8, dropout=0.0)
    module = RetrievalModule(
        encoder,
        similarity,
        SampledSoftmaxLoss(temperature),
        negatives,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
        num_items=13,
        item_dim=8,
    ).double()
    module.set_corpus(torch.arange(1, 13))
    return module


def _batch() -> SequenceBatch:
    return random_batch(torch.tensor([6, 3, 5]), 6, 13, torch.device("cpu"), seed=3)


def test_full_softmax_equals_cross_entropy_over_the_corpus() -> None:
    """Dot head + every corpus item as negative == plain cross-entropy over the corpus logits."""
    torch.manual_seed(0)
    module = _module(DotProductSimilarity(), SharedNegatives(None), temperature=0.05).train()
    batch = _batch()
    loss, parts = module.training_loss(batch)

    per_position = module.embed_sequences(batch)
    next_ids = batch.next_ids()
    supervised = batch.valid_mask & (next_ids != 0)
    queries = per_position[supervised]
    queries = queries / queries.norm(dim=-1, keepdim=True)
    corpus = module.items(module.corpus_ids)
    corpus = corpus / corpus.norm(dim=-1, keepdim=True)
    logits = queries @ corpus.T / 0.05
    targets = next_ids[supervised] - 1  # corpus ids are 1..12 in order
    expected = torch.nn.functional.cross_entropy(logits, targets)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)  # the loss runs in float32
    assert set(parts) == {"sampled_softmax"}


def test_shared_mol_negatives_match_the_two_call_form_and_keep_aux_losses() -> None:
    """MoL without dropout: the shared path == positive call + negatives scored by ``score`` (masked collisions)."""
    torch.manual_seed(0)
    head = MoLSimilarity(
        query_dim=8,
        item_dim=8,
        num_query_components=2,
        num_item_components=2,
        component_dim=4,
        query_hidden_dim=8,
        item_dropout=0.0,
        uid_hash_sizes=[],
        gating_query_hidden_dim=4,
        gating_item_hidden_dim=4,
        gating_qi_hidden_dim=4,
        softmax_dropout=0.0,
    )
    module = _module(head, SharedNegatives(None), temperature=1.0).train()
    batch = _batch()
    loss, parts = module.training_loss(batch)
    assert "mi_loss" in parts

    per_position = module.embed_sequences(batch)
    next_ids = batch.next_ids()
    supervised = batch.valid_mask & (next_ids != 0)
    queries, positives = per_position[supervised], next_ids[supervised]
    corpus = module.corpus_ids
    all_scores = head.score(head.encode_queries(queries), head.encode_items(module.items(corpus)))  # (M, X)
    positive_scores = all_scores[torch.arange(len(positives)), positives - 1]
    negatives = all_scores.masked_fill(corpus[None, :] == positives[:, None], float("-inf"))
    logits = torch.cat([positive_scores[:, None], negatives], dim=1)
    expected = -torch.log_softmax(logits, dim=1)[:, 0].mean()
    assert parts["sampled_softmax"].item() == pytest.approx(
        expected.item(), rel=1e-6
    )  # the loss runs in float32
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    ("sampler", "count"), [("in_batch", "16"), ("shared", "8"), ("full_softmax", "null")]
)
@pytest.mark.parametrize("head", ["dot", "mol"])
def test_every_sampler_config_trains_a_step(sampler: str, count: str, head: str, tmp_path: Path) -> None:
    overrides = [*TINY_OVERRIDES, f"model/negatives={sampler}", f"model/similarity={head}"]
    overrides.append(f"model.negatives.num_negatives={count}")  # TINY_OVERRIDES sets 16
    try:
        cfg = shrink(compose_config("train", overrides), tmp_path)
        model, loader = build_model_and_loader(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert model.negatives.num_negatives == (None if count == "null" else int(count))
    model.train()
    loss, _ = model.training_loss(next(iter(loader)))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.items.table.weight.grad is not None and model.items.table.weight.grad.abs().sum() > 0
