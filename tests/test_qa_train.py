"""QA presets: every qa_* experiment composes and builds; tiny end-to-end train / test / rails-eval runs on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from rails.datamodules.qa import QADataModule
from rails.eval import evaluate
from rails.models.qa_module import QARetrievalModule
from rails.retrieval import QrelsJudge, RetrievalEvaluator
from rails.train import build, run
from tests.conftest import compose_config, shrink
from tests.test_qa_data import write_tiny_beir

EXPERIMENTS = ["qa_scifact_minilm_dot", "qa_scifact_minilm_mol", "qa_nq_minilm_dot", "qa_nq_minilm_mol"]
METRICS = ["recall@1", "recall@10", "recall@100", "ndcg@10", "mrr@10"]


def tiny_overrides(data_dir: Path) -> list[str]:
    return [
        f"data.source.path={data_dir}",
        "data.val_split=dev",
        "data.query_max_length=16",
        "data.passage_max_length=24",
        "data.batch_size=4",
        "data.eval_batch_size=4",
        "data.corpus_batch_size=8",
        "data.num_workers=0",
        "data.pin_memory=false",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "~callbacks.progress_bar",
        "~logger",
    ]


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    return write_tiny_beir(tmp_path / "beir")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_builds(experiment: str, tiny_dir: Path, tmp_path: Path) -> None:
    cfg = shrink(compose_config("train", [f"experiment={experiment}", *tiny_overrides(tiny_dir)]), tmp_path)
    datamodule, model, trainer = build(cfg)
    GlobalHydra.instance().clear()
    assert isinstance(datamodule, QADataModule) and datamodule.num_items == 12
    assert isinstance(model, QARetrievalModule) and model.hparams.num_items == 12
    assert any(
        isinstance(c, RetrievalEvaluator) and isinstance(c.judge, QrelsJudge) for c in trainer.callbacks
    )
    if experiment.endswith("_mol"):
        assert model.encoder.pooling == "mixture" and model.encoder.dim == 8 * 384
        assert type(model.similarity).__name__ == "MoLSimilarity"
        assert model.aux_loss_weights == {"mi_loss": 0.001}
    else:
        assert model.encoder.pooling == "mean"


def test_model_and_data_configs_compose_on_their_own(tmp_path: Path) -> None:
    cfg = compose_config("train", ["model=qa_dual_encoder", "data=qa_beir", "data.source.name=fiqa"])
    GlobalHydra.instance().clear()
    assert cfg.model._target_ == "rails.models.qa_module.QARetrievalModule"
    assert cfg.data.source.name == "fiqa" and cfg.data.tokenizer == cfg.model.encoder.model_name_or_path
    nq = compose_config("train", ["experiment=qa_nq_minilm_dot"])
    GlobalHydra.instance().clear()
    assert nq.data.source.name == "nq" and nq.data.val_queries_from_train == 2000


# MoL ranking with the cosine the dot loss trains
BLEND = ["model/similarity_blend=cosine", "model.dot_loss_weight=1.0"]


@pytest.mark.parametrize(
    ("experiment", "extra"),
    [
        ("qa_scifact_minilm_dot", []),
        ("qa_scifact_minilm_mol", []),
        ("qa_scifact_minilm_mol", BLEND),
        # the text encoder under an EMA of the weights: rails-eval of last.ckpt reads the average it tested
        ("qa_scifact_minilm_dot", ["callbacks/weight_averaging=ema", "callbacks.weight_averaging.decay=0.5"]),
    ],
)
def test_train_test_and_rails_eval(experiment: str, extra: list[str], tiny_dir: Path, tmp_path: Path) -> None:
    overrides = [f"experiment={experiment}", *tiny_overrides(tiny_dir), *extra]
    cfg = shrink(compose_config("train", overrides), tmp_path)
    assert cfg.model.similarity._target_.endswith("MoLWithCosine" if extra == BLEND else "Similarity")
    metrics = run(cfg)
    GlobalHydra.instance().clear()
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written.keys() == metrics.keys()
    for stage in ("val", "test"):
        for key in METRICS:
            assert 0.0 <= written[f"{stage}/{key}"] <= 1.0, f"{stage}/{key}"
    assert written["test/recall@100"] == 1.0  # 12 passages: every relevant one is within the top 100
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    # rails-eval rebuilds data, model and the (QA) evaluation callback from the checkpoint alone.
    eval_cfg = shrink(
        compose_config("eval", [f"ckpt_path={checkpoint}", "trainer.accelerator=cpu"]), tmp_path / "e"
    )
    assert eval_cfg.get("retrieval") is None
    with open_dict(eval_cfg):
        eval_cfg.trainer.enable_progress_bar = False
        eval_cfg.trainer.precision = "32-true"
    again = evaluate(eval_cfg)
    GlobalHydra.instance().clear()
    assert again["test/ndcg@10"] == pytest.approx(written["test/ndcg@10"], abs=1e-6)


def test_zero_shot_minilm_ranks_the_tiny_fixture(tiny_dir: Path, tmp_path: Path) -> None:
    """Without training, MiniLM must find the obvious passages of the fixture (a data-path sanity check)."""
    overrides = ["experiment=qa_scifact_minilm_dot", *tiny_overrides(tiny_dir), "train=false"]
    cfg = shrink(compose_config("train", overrides), tmp_path)
    metrics = run(cfg)
    GlobalHydra.instance().clear()
    assert metrics["test/recall@10"] == 1.0
    assert metrics["test/mrr@10"] >= 0.8
