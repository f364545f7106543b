"""scripts/half_checkpoint.py halves a checkpoint folder's weights; the LM encoder loads them as float32."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rails.models.encoders.lm import load_pretrained

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "half_checkpoint.py"


def _tiny_bert(folder: Path) -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config)
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    return model


def _halve(source: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(source), str(out), *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_half_weights_load_as_their_float32_values(tmp_path: Path) -> None:
    model = _tiny_bert(tmp_path / "full")
    done = _halve(tmp_path / "full", tmp_path / "half")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "half" / "vocab.txt").read_text() == "[PAD]\n[UNK]\n"  # every other file copied
    full = (tmp_path / "full" / "model.safetensors").stat().st_size
    assert (tmp_path / "half" / "model.safetensors").stat().st_size < 0.6 * full
    loaded = load_pretrained(str(tmp_path / "half"))
    reference = dict(model.named_parameters())
    for name, param in loaded.named_parameters():
        assert param.dtype == torch.float32, name
        torch.testing.assert_close(param.data, reference[name].data.half().float(), rtol=0, atol=0)


def test_half_checkpoint_refuses_what_it_cannot_convert(tmp_path: Path) -> None:
    _tiny_bert(tmp_path / "full")
    (tmp_path / "taken").mkdir()
    taken = _halve(tmp_path / "full", tmp_path / "taken")
    assert taken.returncode != 0 and "exists: give a new folder" in taken.stderr
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    empty = _halve(tmp_path / "empty", tmp_path / "out")
    assert (
        empty.returncode != 0 and "no *.safetensors file" in empty.stderr and not (tmp_path / "out").exists()
    )
    missing = _halve(tmp_path / "nowhere", tmp_path / "out2")
    assert missing.returncode != 0 and "no config.json" in missing.stderr
