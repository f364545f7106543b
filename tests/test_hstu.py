"""HSTU encoder (spec §4): shapes, causality, padding, time buckets, reference attention, training."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from rails.batch import SequenceBatch
from rails.models.encoders import HSTU, SequenceHistory
from rails.models.encoders.hstu_attention import (
    hstu_attention,
    hstu_attention_reference,
    relative_bias,
    time_buckets,
)
from rails.train import run
from tests.conftest import TINY_OVERRIDES, compose_config, shrink

CONF = Path(__file__).resolve().parents[1] / "conf"


def random_batch(lengths: list[int], n: int, num_items: int = 50, seed: int = 0) -> SequenceBatch:
    """Right-padded batch with increasing timestamps (gaps from seconds to months)."""
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    lengths_t = torch.tensor(lengths)
    valid = torch.arange(n)[None, :] < lengths_t[:, None]
    ids = torch.randint(1, num_items, (b, n), generator=g) * valid
    gaps = torch.exp(torch.rand(b, n + 1, generator=g) * 16).long()
    times = 1_000_000_000 + gaps.cumsum(1)
    return SequenceBatch(
        user_ids=torch.arange(b),
        history_ids=ids,
        history_timestamps=times[:, :n] * valid,
        history_ratings=valid.float(),
        lengths=lengths_t,
        target_ids=torch.randint(1, num_items, (b,), generator=g),
        target_timestamps=times[torch.arange(b), lengths_t],
        target_ratings=torch.ones(b),
    )


def tiny_hstu(**overrides: object) -> HSTU:
    kwargs: dict = {"dim": 16, "max_seq_len": 12, "num_blocks": 2, "num_heads": 2, "qk_dim": 4, "v_dim": 6}
    kwargs["attention_impl"] = "torch"
    kwargs.update(overrides)
    torch.manual_seed(0)
    return HSTU(**kwargs).eval()


def test_shapes_and_l2_output() -> None:
    batch = random_batch([12, 5, 1], n=12)
    out = tiny_hstu()(torch.randn(3, 12, 16), SequenceHistory.of(batch))
    assert out.shape == (3, 12, 16)
    norms = out[batch.valid_mask].norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_causal() -> None:
    """Output t ignores embeddings after t and timestamps after t + 1 (ts[t+1] is the predicted item's time)."""
    model = tiny_hstu()
    batch = random_batch([12, 12], n=12)
    emb = torch.randn(2, 12, 16)
    base = model(emb, SequenceHistory.of(batch))
    for t in (0, 4, 10):
        emb2 = emb.clone()
        emb2[:, t + 1 :] = torch.randn_like(emb2[:, t + 1 :])
        ts2 = batch.history_timestamps.clone()
        ts2[:, t + 2 :] += 12345
        perturbed = SequenceBatch(**{**batch.__dict__, "history_timestamps": ts2})
        out = model(emb2, SequenceHistory.of(perturbed))
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1])
        assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :])


def test_next_timestamp_reaches_current_position() -> None:
    """The time bias of query t uses the timestamp of the item it predicts (spec §4.3)."""
    model = tiny_hstu()
    with torch.no_grad():
        for layer in model.layers:
            layer.bias.time_weights.copy_(torch.linspace(-3, 3, layer.bias.time_weights.numel()))
    batch = random_batch([6], n=12)
    emb = torch.randn(1, 12, 16)
    base = model(emb, SequenceHistory.of(batch))
    later = SequenceBatch(**{**batch.__dict__, "target_timestamps": batch.target_timestamps + 10**7})
    out = model(emb, SequenceHistory.of(later))
    torch.testing.assert_close(out[:, :5], base[:, :5])
    assert not torch.allclose(out[:, 5], base[:, 5])


def test_padding_invariance() -> None:
    model = tiny_hstu()
    batch = random_batch([7, 3, 9], n=9)
    emb = torch.randn(3, 9, 16)
    base = model(emb, SequenceHistory.of(batch))
    pad = 3
    padded = SequenceBatch(
        **{
            **batch.__dict__,
            "history_ids": torch.nn.functional.pad(batch.history_ids, (0, pad)),
            "history_timestamps": torch.nn.functional.pad(batch.history_timestamps, (0, pad)),
            "history_ratings": torch.nn.functional.pad(batch.history_ratings, (0, pad)),
        }
    )
    noisy = torch.cat([emb, torch.randn(3, pad, 16)], dim=1)
    noisy[~padded.valid_mask] = torch.randn(int((~padded.valid_mask).sum()), 16)  # garbage at padding
    out = model(noisy, SequenceHistory.of(padded))
    mask = batch.valid_mask
    torch.testing.assert_close(out[:, :9][mask], base[mask])


def test_time_buckets_hand_computed() -> None:
    """bucket = trunc(ln(max(|dt|, 1)) / 0.301) clamped to [0, 128]; one year is bucket 57."""
    delta = torch.tensor([0, 1, -1, 2, 10, -10, 3600, 86_400, 31_536_000, 10**17])
    expected = torch.tensor([0, 0, 0, 2, 7, 7, 27, 37, 57, 128])
    assert torch.equal(time_buckets(delta, 0.301, 128), expected)
    assert torch.equal(time_buckets(torch.tensor([3600]), 1.0, 5), torch.tensor([5]))


def test_relative_bias_hand_computed() -> None:
    ts = torch.tensor([[0, 10, 3600]])
    next_ts = torch.tensor([[10, 3600, 31_536_000]])
    pos = torch.arange(3, dtype=torch.float64) * 1000
    tsw = torch.arange(129, dtype=torch.float64)
    bias = relative_bias(pos, tsw, ts, next_ts, 0.301)[0]
    # (i, j): w_pos[i - j] + w_ts[bucket(next_ts[i] - ts[j])]; entries j > i are masked later.
    assert bias[0, 0] == 7  # 10 s -> 7
    assert bias[1, 0] == 1000 + 27  # 3600 s -> 27
    assert bias[1, 1] == 27  # 3590 s -> 27
    assert bias[2, 0] == 2000 + 57  # one year -> 57
    assert bias[2, 1] == 1000 + 57
    assert bias[2, 2] == 57


def loop_attention(q, k, v, pos, tsw, ts, next_ts, lengths, normalizer, divisor):
    """Independent float64 triple loop over (b, h, i) with math.log buckets."""
    b, n, h, _ = q.shape
    out = torch.zeros(b, n, h, v.shape[-1], dtype=torch.float64)
    for bb in range(b):
        for hh in range(h):
            for i in range(int(lengths[bb])):
                for j in range(i + 1):
                    gap = max(abs(int(next_ts[bb, i]) - int(ts[bb, j])), 1)
                    bucket = min(max(int(math.log(gap) / divisor), 0), tsw.shape[0] - 1)
                    s = float(q[bb, i, hh] @ k[bb, j, hh]) + float(pos[i - j]) + float(tsw[bucket])
                    a = s / (1 + math.exp(-s)) / normalizer
                    out[bb, i, hh] += a * v[bb, j, hh]
    return out


def test_reference_attention_matches_loop() -> None:
    torch.manual_seed(0)
    batch = random_batch([9, 4], n=9)
    q, k = torch.randn(2, 2, 9, 2, 3, dtype=torch.float64)
    v = torch.randn(2, 9, 2, 5, dtype=torch.float64)
    pos, tsw = torch.randn(12, dtype=torch.float64), torch.randn(129, dtype=torch.float64)
    args = (pos, tsw, batch.history_timestamps, batch.next_timestamps(), batch.lengths, 13.0, 0.301)
    expected = loop_attention(q, k, v, *args)
    torch.testing.assert_close(hstu_attention_reference(q, k, v, *args), expected)
    torch.testing.assert_close(hstu_attention(q, k, v, *args, impl="torch"), expected)


def test_initialisation_and_normalizer() -> None:
    model = HSTU(dim=50, max_seq_len=200, num_blocks=1, num_heads=2, qk_dim=25, v_dim=25)
    assert model.attention_normalizer == 211.0
    assert abs(model.input.positions.weight.std().item() - math.sqrt(2 / 261)) < 0.005
    assert abs(model.layers[0].uvqk.std().item() - 0.02) < 0.002
    assert HSTU(dim=8, max_seq_len=10, attention_normalizer=5.0).attention_normalizer == 5.0


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="attention_impl"):
        HSTU(dim=8, max_seq_len=10, attention_impl="flash")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attention_normalizer"):
        HSTU(dim=8, max_seq_len=10, attention_normalizer=0.0)
    with pytest.raises(ValueError, match="num_heads"):
        HSTU(dim=8, max_seq_len=10, num_heads=0)
    with pytest.raises(ValueError, match="max_seq_len"):
        tiny_hstu(max_seq_len=4)(torch.randn(1, 6, 16), random_batch([6], n=6))
    if os.environ.get("TRITON_INTERPRET") != "1":
        q = torch.randn(1, 4, 1, 2)
        ts = torch.zeros(1, 4, dtype=torch.int64)
        with pytest.raises(ValueError, match="triton"):
            hstu_attention(
                q, q, q, torch.zeros(4), torch.zeros(129), ts, ts, torch.tensor([4]), 1.0, impl="triton"
            )


@pytest.mark.parametrize("encoder", ["hstu", "hstu_large"])
def test_encoder_configs_instantiate(encoder: str) -> None:
    cfg = compose_config("train", [f"model/encoder={encoder}"])
    GlobalHydra.instance().clear()
    model = instantiate(cfg.model.encoder)
    assert isinstance(model, HSTU)
    assert model.attention_normalizer == cfg.data.max_seq_len + 11
    assert len(model.layers) == (2 if encoder == "hstu" else 8)


PRESETS = sorted(
    f"{data}_{model}_dot"
    for data in ("ml_1m", "ml_20m", "amzn_books")
    for model in ("sasrec", "hstu", "hstu_large")
)


@pytest.mark.parametrize("preset", PRESETS)
def test_experiment_presets_compose(preset: str) -> None:
    """Every paper dot-product row composes; building needs the dataset configs of conf/data/."""
    assert (CONF / "experiment" / f"{preset}.yaml").is_file()
    data_name = next(d for d in ("ml_1m", "ml_20m", "amzn_books") if preset.startswith(d))
    if not (CONF / "data" / f"{data_name}.yaml").is_file():
        pytest.skip(f"conf/data/{data_name}.yaml is not written yet")
    cfg = compose_config("train", [f"experiment={preset}"])
    GlobalHydra.instance().clear()
    encoder = instantiate(cfg.model.encoder)
    assert encoder.dim == cfg.model.item_dim
    assert cfg.trainer.accelerator == "gpu"
    expected_negatives = 512 if data_name == "amzn_books" else 128
    assert cfg.model.negatives.num_negatives == expected_negatives
    assert instantiate(cfg.model, num_items=8).loss.temperature == 0.05  # the dot head's recipe


def test_hstu_trains_and_beats_popularity(tmp_path: Path) -> None:
    """12 tiny epochs of HSTU through rails.train.run clearly beat the popularity ranking."""
    overrides = TINY_OVERRIDES + [
        "model/encoder=hstu",
        "data.source.num_users=300",
        "trainer.max_epochs=12",
    ]
    cfg = shrink(compose_config("train", overrides), tmp_path)
    metrics = run(cfg)
    GlobalHydra.instance().clear()
    assert metrics["test/hr@10"] > metrics["test/popularity/hr@10"] + 0.05, metrics


def test_bench_script_smoke(tmp_path: Path) -> None:
    """scripts/bench_hstu.py runs on CPU (as a command) and writes its markdown + json report."""
    args = ["--device", "cpu", "--tiny", "--lengths", "8", "--tokens", "16", "--steps", "1", "--warmup", "0"]
    args += ["--no-epoch", "--precision", "32-true", "--out", str(tmp_path / "bench")]
    script = CONF.parent / "scripts" / "bench_hstu.py"
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["steps"][0]["seq_len"] == 8 and result["steps"][0]["torch_ms"] > 0
    assert "| 8 | 2 |" in (tmp_path / "bench.md").read_text()
