"""``callbacks/weight_averaging=ema``: validation, checkpoint selection, saved weights and the test stage use the
EMA of the weights, the raw weights train as without it, and a resumed run ends where an uninterrupted one does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from rails.callbacks.weight_averaging import EMAWeights
from rails.config import ConfigError, check_config
from rails.runs.checkpoints import write_inference_checkpoint
from rails.train import run
from tests.conftest import TINY_OVERRIDES, compose_config, eval_checkpoint, shrink
from tests.test_resume import RESUME_OVERRIDES, _assert_same, run_keeping_mid_epoch_checkpoint

EPOCHS = [o for o in TINY_OVERRIDES if not o.startswith("trainer.max_epochs")] + [
    "trainer.max_epochs=3",
    "trainer.deterministic=true",
    "~callbacks.throughput",
]
EMA = ["callbacks/weight_averaging=ema", "callbacks.weight_averaging.decay=0.9"]


def _train(folder: Path, overrides: list[str]) -> tuple[dict[str, float], Path]:
    metrics = run(shrink(compose_config("train", overrides), folder))
    GlobalHydra.instance().clear()
    return metrics, folder / "run" / "checkpoints"


def _checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize("head", ["dot", "mol"])
def test_validation_selection_and_test_use_the_average(tmp_path: Path, head: str) -> None:
    metrics, checkpoints = _train(tmp_path / "ema", [*EPOCHS, f"model/similarity={head}", *EMA])
    best_path = next(checkpoints.glob("epoch_*.ckpt"))
    best = _checkpoint(best_path)
    # the checkpoint holds the average as its weights and the raw ones beside them, and they differ
    assert best["state_dict"].keys() == best["current_model_state"].keys()
    assert _max_difference(best["state_dict"], best["current_model_state"]) > 1e-4
    # the score that selected it is the validation metric of the weights it holds ...
    selector = next(v for k, v in best["callbacks"].items() if "val/ndcg@10" in k and "best_model_score" in v)
    evaluated = eval_checkpoint(best_path, tmp_path / "eval")
    assert float(selector["best_model_score"]) == pytest.approx(evaluated["val/ndcg@10"], abs=1e-6)
    # ... and so are the run's final validation and test metrics (the best checkpoint re-validated and tested)
    for key in ("val/ndcg@10", "val/hr@10", "test/ndcg@10", "test/hr@10"):
        assert metrics[key] == pytest.approx(evaluated[key], abs=1e-6), key


def test_inference_copy_keeps_the_average_only(tmp_path: Path) -> None:
    _, checkpoints = _train(tmp_path / "ema", [*EPOCHS, *EMA, "test=false"])
    source = next(checkpoints.glob("epoch_*.ckpt"))
    slim = write_inference_checkpoint(source, tmp_path / "slim.ckpt")
    assert "current_model_state" not in slim and "averaging_state" not in slim
    assert _max_difference(slim["state_dict"], _checkpoint(source)["state_dict"]) == 0.0


def test_raw_weights_train_as_without_the_average(tmp_path: Path) -> None:
    """decay 1 keeps the first update's copy as the average; the raw weights still follow the plain run's path."""
    _, plain = _train(tmp_path / "plain", EPOCHS)
    _, frozen = _train(tmp_path / "frozen", [*EPOCHS, *EMA, "callbacks.weight_averaging.decay=1.0"])
    raw = _checkpoint(frozen / "last.ckpt")["current_model_state"]
    reference = _checkpoint(plain / "last.ckpt")["state_dict"]
    assert _max_difference(raw, reference) < 1e-5
    # the average stayed at the weights after the first step: far from the trained ones
    assert _max_difference(_checkpoint(frozen / "last.ckpt")["state_dict"], reference) > 1e-3


def test_resume_mid_epoch_restores_raw_and_average(tmp_path: Path) -> None:
    overrides = [*RESUME_OVERRIDES, *EMA]
    reference, snapshot = run_keeping_mid_epoch_checkpoint(tmp_path, overrides)
    assert "current_model_state" in _checkpoint(snapshot)
    resumed, _ = _train(tmp_path / "b", [*overrides, f"ckpt_path={snapshot}"])
    _assert_same(reference, resumed)


def test_off_by_default_and_composes() -> None:
    assert "weight_averaging" not in compose_config("train", TINY_OVERRIDES).callbacks
    cfg = compose_config("train", [*TINY_OVERRIDES, *EMA])
    assert cfg.callbacks.weight_averaging.decay == 0.9
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(
    ("name", "value"),
    [("decay", 1.5), ("decay", -0.1), ("update_every_n_steps", 0), ("update_starting_at_step", -2)],
)
def test_bad_settings_name_the_key(name: str, value: float) -> None:
    key = f"{name}={value}"
    with pytest.raises(ValueError, match=f"^{key}"):
        EMAWeights(**{name: value})
    cfg = compose_config("train", [*TINY_OVERRIDES, *EMA, f"callbacks.weight_averaging.{key}"])
    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError, match=f"callbacks.weight_averaging.{key}"):
        check_config(cfg)


def test_lightning_still_has_what_ema_weights_overrides() -> None:
    """EMAWeights overrides two private methods of Lightning's callback and reads its ``_average_model``: a
    Lightning that renames them would silently bypass the overrides (the raw weights validated, buffers averaged)."""
    from lightning.pytorch.callbacks import EMAWeightAveraging

    for name in ("_swap_models", "_copy_average_to_current"):
        assert callable(getattr(EMAWeightAveraging, name, None)), (
            f"lightning.{EMAWeightAveraging.__name__}.{name}"
        )
        assert getattr(EMAWeights, name) is not getattr(EMAWeightAveraging, name)
    assert EMAWeights()._average_model is None
