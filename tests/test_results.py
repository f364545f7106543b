"""Result tables are computed from run directories: grouping by experiment, mean/std over seeds, README table."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from rails.results import collect_runs, markdown, readme_table, summarize


def _run_dir(
    root: Path, name: str, seed: int, overrides: list[str], metrics: dict[str, float], holdout: int = 1
) -> Path:
    directory = root / name
    (directory / ".hydra").mkdir(parents=True)
    config = {"tags": ["ml_1m_seq", "hstu_large", "mol"], "seed": seed, "data": {"holdout": holdout}}
    (directory / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (directory / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (directory / "metrics.json").write_text(json.dumps(metrics))
    command = "rails-train " + " ".join(overrides)
    (directory / "run.json").write_text(json.dumps({"command": command, "system.gpu": "NVIDIA H200"}))
    return directory


def test_rows_group_seeds_and_separate_variants(tmp_path: Path) -> None:
    base = ["experiment=ml_1m_seq_hstu_large_mol", "data.root=/x"]
    hr = [0.30, 0.32, 0.31]
    for seed, value in enumerate(hr, start=1):
        _run_dir(
            tmp_path, f"preset{seed}", seed, [*base, f"seed={seed}"], {"test/hr@10": value, "val/hr@10": 1.0}
        )
    _run_dir(tmp_path, "n512", 1, [*base, "model.negatives.num_negatives=512", "seed=1"], {"test/hr@10": 0.4})
    _run_dir(tmp_path, "holdout2", 1, [*base, "data.holdout=2", "seed=1"], {"test/hr@10": 0.2}, holdout=2)
    (tmp_path / "unfinished" / ".hydra").mkdir(parents=True)  # no metrics.json: ignored

    rows = summarize(collect_runs([tmp_path]))

    assert len(rows) == 3
    preset = next(r for r in rows if r["variant"] == "preset")
    assert preset["seeds"] == [1, 2, 3]
    assert preset["metrics"]["test/hr@10"]["mean"] == pytest.approx(statistics.fmean(hr))
    assert preset["metrics"]["test/hr@10"]["std"] == pytest.approx(statistics.stdev(hr))
    assert "val/hr@10" not in preset["metrics"]
    assert preset["published"]["test/hr@10"] == 0.3412 and preset["published"]["test/ndcg@10"] == 0.1979
    assert preset["gpu"] == ["NVIDIA H200"] and len(preset["commands"]) == 3
    variant = next(r for r in rows if "num_negatives" in r["variant"])
    assert variant["variant"] == "model.negatives.num_negatives=512"
    separate = next(r for r in rows if r["protocol"] == "separate val item")
    assert separate["published"] is None  # the paper has no separate validation item


def test_markdown_and_readme_tables_show_every_preset_row(tmp_path: Path) -> None:
    _run_dir(tmp_path, "a", 1, ["experiment=x", "seed=1"], {"test/hr@10": 0.25, "test/ndcg@10": 0.125})
    _run_dir(tmp_path, "b", 2, ["experiment=x", "seed=2"], {"test/hr@10": 0.35, "test/ndcg@10": 0.175})
    _run_dir(tmp_path, "c", 1, ["experiment=x", "model.x=1", "seed=1"], {"test/hr@10": 0.9})
    rows = summarize(collect_runs([tmp_path]))
    text = markdown(rows)
    assert "0.3000 ± 0.0707" in text and "`model.x=1`" in text and "rails-train experiment=x seed=2" in text
    readme = readme_table(rows, ["ml_1m_seq"])
    assert "0.3000 ± 0.0707" in readme and "0.1500 ± 0.0354" in readme
    assert "0.9000" not in readme  # ablation rows stay out of the README table
    assert readme_table(rows, ["other"]).count("\n") == 2  # header only


def test_a_data_override_names_the_dataset_and_leaves_the_variant(tmp_path: Path) -> None:
    base = ["experiment=ml_1m_seq_hstu_large_mol", "data=ml_100k", "seed=1"]
    _run_dir(tmp_path, "real", 1, [*base, "data.timestamps=data"], {"test/hr@10": 0.20})
    _run_dir(tmp_path, "positions", 1, [*base, "data.timestamps=positions"], {"test/hr@10": 0.19})

    rows = summarize(collect_runs([tmp_path]))

    assert {r["dataset"] for r in rows} == {"ml_100k"}
    assert sorted(r["variant"] for r in rows) == ["data.timestamps=data", "data.timestamps=positions"]
    assert all(r["published"] is None for r in rows)  # ML-1M's paper numbers do not apply to ML-100K
