"""Result tables are computed from run directories: grouping by experiment, mean/std over seeds, README table,
best epochs (job log / epochs.csv) and learning-curve figures."""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rails.results import collect_runs, markdown, summarize, write_learning_curves
from rails.results_compare import head_free_variant, mol_vs_dot, readme_table
from rails.results_curves import line_style, read_epochs_csv

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PRESET = "experiment=ml_1m_seq_hstu_large_mol"  # the experiment of the runs below (their tags' name)


def _run_dir(
    root: Path,
    name: str,
    seed: int,
    overrides: list[str],
    metrics: dict[str, float],
    holdout: int = 1,
    tags: tuple[str, str, str] = ("ml_1m_seq", "hstu_large", "mol"),
) -> Path:
    directory = root / name
    (directory / ".hydra").mkdir(parents=True)
    config = {"tags": list(tags), "seed": seed, "data": {"holdout": holdout}}
    (directory / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (directory / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (directory / "metrics.json").write_text(json.dumps(metrics))
    command = "rails-train " + " ".join(overrides)
    (directory / "run.json").write_text(json.dumps({"command": command, "system.gpu": "NVIDIA H200"}))
    return directory


def _epochs_csv(directory: Path, ndcg: list[float], post_fit: float | None = None) -> Path:
    """A CSVLogger file as Lightning writes it: train rows, one val row per epoch (empty cells elsewhere) and,
    after fit, the validation of the best checkpoint and the test row, both at the final step."""
    lines = ["epoch,step,test/ndcg@10,train/loss,val/hr@10,val/ndcg@10"]
    for epoch, value in enumerate(ndcg):
        lines.append(f"{epoch},{10 * epoch + 4},,{5.0 - epoch},,")
        lines.append(f"{epoch},{10 * epoch + 9},,,{2 * value},{value}")
    if post_fit is not None:
        final = 10 * len(ndcg)
        lines += [f"{len(ndcg)},{final},,,{2 * post_fit},{post_fit}", f"{len(ndcg)},{final},0.5,,,"]
    path = directory / "epochs.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_rows_group_seeds_and_separate_variants(tmp_path: Path) -> None:
    base = [PRESET, "data.root=/x"]
    hr = [0.30, 0.32, 0.31]
    fast = ["model.compile_encoder=true", "model.compile_mode=reduce-overhead", "model.optimizer.fused=true"]
    for seed, value in enumerate(hr, start=1):
        speed = fast if seed == 3 else []  # the compiled step is the same model: same row
        _run_dir(
            tmp_path,
            f"preset{seed}",
            seed,
            [*base, *speed, f"seed={seed}"],
            {"test/hr@10": value, "val/hr@10": 1.0},
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


def test_mol_rows_are_compared_with_the_matching_dot_row(tmp_path: Path) -> None:
    dot, mol = ("ml_1m_seq", "hstu_large", "dot"), ("ml_1m_seq", "hstu_large", "mol")
    for seed in (1, 2):
        _run_dir(
            tmp_path,
            f"dot{seed}",
            seed,
            [f"seed={seed}"],
            {"test/hr@10": 0.3, "test/ndcg@10": 0.15},
            tags=dot,
        )
    holdout = ["data.holdout=2", "seed=1"]
    _run_dir(tmp_path, "dot_h2", 1, holdout, {"test/hr@10": 0.2, "test/ndcg@10": 0.1}, holdout=2, tags=dot)
    _run_dir(tmp_path, "mol", 1, ["seed=1"], {"test/hr@10": 0.33, "test/ndcg@10": 0.165}, tags=mol)
    _run_dir(tmp_path, "mol_h2", 1, holdout, {"test/hr@10": 0.22, "test/ndcg@10": 0.12}, holdout=2, tags=mol)
    tuned = ["model.similarity.item_dropout=0.3", "seed=1"]
    _run_dir(tmp_path, "mol_tuned", 1, tuned, {"test/hr@10": 0.36, "test/ndcg@10": 0.18}, tags=mol)
    alone = ("ml_1m_seq", "sasrec", "mol")  # no dot row of that model: no comparison
    _run_dir(tmp_path, "sasrec", 1, ["seed=1"], {"test/hr@10": 0.3, "test/ndcg@10": 0.1}, tags=alone)
    rows = summarize(collect_runs([tmp_path]))
    pairs = {(p["variant"], p["dot_variant"]): p for p in mol_vs_dot(rows)}
    assert set(pairs) == {
        ("preset", "preset"),
        ("data.holdout=2", "data.holdout=2"),
        ("model.similarity.item_dropout=0.3", "preset"),
    }
    assert pairs["preset", "preset"]["ratio"]["test/hr@10"] == pytest.approx(1.1)
    assert pairs["data.holdout=2", "data.holdout=2"]["ratio"]["test/ndcg@10"] == pytest.approx(1.2)
    assert pairs["model.similarity.item_dropout=0.3", "preset"]["dot_seeds"] == 2
    text = markdown(rows)
    assert "## MoL vs dot product" in text
    assert "| `model.similarity.item_dropout=0.3` (1) | `preset` (2) | 1.200 | 1.200 |" in text


def test_a_tuned_mol_row_is_compared_with_the_dot_row_trained_the_same_way(tmp_path: Path) -> None:
    dot, mol = ("amazon_beauty", "hstu_large", "dot"), ("amazon_beauty", "hstu_large", "mol")
    _run_dir(tmp_path, "dot", 1, ["seed=1"], {"test/hr@10": 0.08, "test/ndcg@10": 0.04}, tags=dot)
    recipe = ["trainer.max_epochs=41", "trainer.precision=32-true"]
    _run_dir(tmp_path, "dot41", 1, [*recipe, "seed=1"], {"test/hr@10": 0.09, "test/ndcg@10": 0.05}, tags=dot)
    head = ["model.dot_loss_weight=1.0", "model.head_weight_decay=1.0", "model.similarity.item_dropout=0.3"]
    _run_dir(tmp_path, "mol41", 1, [*recipe, *head, "seed=1"], {"test/hr@10": 0.099, "test/ndcg@10": 0.055},
             tags=mol)  # fmt: skip
    encoder = ["model.encoder.dropout=0.3", "model.similarity.item_dropout=0.3", "seed=1"]
    _run_dir(tmp_path, "mol_enc", 1, encoder, {"test/hr@10": 0.1, "test/ndcg@10": 0.05}, tags=mol)
    rows = summarize(collect_runs([tmp_path]))
    pairs = {p["variant"]: p for p in mol_vs_dot(rows)}
    tuned = pairs[" ".join(sorted(recipe + head))]
    assert tuned["dot_variant"] == "trainer.max_epochs=41 trainer.precision=32-true"
    assert tuned["ratio"]["test/hr@10"] == pytest.approx(1.1) and tuned["ratio"][
        "test/ndcg@10"
    ] == pytest.approx(1.1)
    # an encoder change of the MoL run alone has no dot row trained that way: the preset dot row
    assert pairs["model.encoder.dropout=0.3 model.similarity.item_dropout=0.3"]["dot_variant"] == "preset"
    assert head_free_variant("model.similarity.item_dropout=0.3 model/similarity=mol") == "preset"
    recipe_group = (
        "model.item_dim=128 model/mol_recipe=joint model/similarity_blend=cosine trainer.max_epochs=41"
    )
    assert head_free_variant(recipe_group) == "model.item_dim=128 trainer.max_epochs=41"


def test_a_tuned_mol_preset_is_compared_with_its_dot_twin(tmp_path: Path) -> None:
    dot, mol = ("amazon_beauty", "hstu_large", "dot"), ("amazon_beauty", "hstu_large", "mol")
    dot_tuned, mol_tuned = (f"experiment=amazon_beauty_hstu_large_{head}_tuned" for head in ("dot", "mol"))
    _run_dir(tmp_path, "dot", 1, ["seed=1"], {"test/hr@10": 0.08, "test/ndcg@10": 0.04}, tags=dot)
    _run_dir(tmp_path, "dot_t", 1, [dot_tuned, "seed=1"], {"test/hr@10": 0.1, "test/ndcg@10": 0.05}, tags=dot)
    _run_dir(
        tmp_path, "mol_t", 1, [mol_tuned, "seed=1"], {"test/hr@10": 0.11, "test/ndcg@10": 0.06}, tags=mol
    )

    (pair,) = mol_vs_dot(summarize(collect_runs([tmp_path])))

    assert (pair["variant"], pair["dot_variant"]) == (mol_tuned, dot_tuned)  # not the preset dot row
    assert pair["ratio"]["test/ndcg@10"] == pytest.approx(1.2)
    assert (
        head_free_variant("experiment=ml_1m_seq_hstu_large_mol_tuned")
        == "experiment=ml_1m_seq_hstu_large_dot_tuned"
    )


def test_the_readme_table_adds_the_best_tuned_row_confirmed_over_three_seeds(tmp_path: Path) -> None:
    for seed in (1, 2, 3):
        ndcg = 0.05 + 0.001 * seed
        _run_dir(
            tmp_path, f"a{seed}", seed, ["x=1", f"seed={seed}"], {"test/hr@10": 0.1, "test/ndcg@10": ndcg}
        )
        _run_dir(
            tmp_path, f"b{seed}", seed, ["x=2", f"seed={seed}"], {"test/hr@10": 0.1, "test/ndcg@10": 0.04}
        )
    _run_dir(tmp_path, "c", 1, ["x=3", "seed=1"], {"test/hr@10": 0.5, "test/ndcg@10": 0.5})  # one seed only
    _run_dir(tmp_path, "p", 1, ["seed=1"], {"test/hr@10": 0.2, "test/ndcg@10": 0.01})
    readme = readme_table(summarize(collect_runs([tmp_path])), ["ml_1m_seq"])
    body = readme.splitlines()[2:]
    assert len(body) == 2, readme
    assert any("`x=1` | 3 | 0.1000 ± 0.0000 | 0.0520 ± 0.0010" in line for line in body)
    assert any("`preset` | 1 | 0.2000 | 0.0100" in line for line in body)


def test_markdown_and_readme_tables_show_every_preset_row(tmp_path: Path) -> None:
    _run_dir(tmp_path, "a", 1, [PRESET, "seed=1"], {"test/hr@10": 0.25, "test/ndcg@10": 0.125})
    _run_dir(tmp_path, "b", 2, [PRESET, "seed=2"], {"test/hr@10": 0.35, "test/ndcg@10": 0.175})
    _run_dir(tmp_path, "c", 1, [PRESET, "model.x=1", "seed=1"], {"test/hr@10": 0.9})
    rows = summarize(collect_runs([tmp_path]))
    text = markdown(rows)
    assert "0.3000 ± 0.0707" in text and "`model.x=1`" in text and f"rails-train {PRESET} seed=2" in text
    readme = readme_table(rows, ["ml_1m_seq"])
    assert "0.3000 ± 0.0707" in readme and "0.1500 ± 0.0354" in readme
    assert "0.9000" not in readme  # ablation rows stay out of the README table
    assert readme_table(rows, ["other"]).count("\n") == 2  # header only


def test_a_tuned_preset_is_its_own_row_and_the_base_preset_is_not_named(tmp_path: Path) -> None:
    for seed in (1, 2):  # conf/experiment/*_tuned.yaml: tagged like the base preset, other settings
        _run_dir(tmp_path, f"base{seed}", seed, [PRESET, f"seed={seed}"], {})
        _run_dir(tmp_path, f"tuned{seed}", seed, [f"{PRESET}_tuned", f"seed={seed}"], {})

    rows = summarize(collect_runs([tmp_path]))

    assert sorted((r["variant"], r["seeds"]) for r in rows) == [
        ("experiment=ml_1m_seq_hstu_large_mol_tuned", [1, 2]),
        ("preset", [1, 2]),
    ]


def test_a_data_override_names_the_dataset_and_leaves_the_variant(tmp_path: Path) -> None:
    base = [PRESET, "data=ml_100k", "seed=1"]
    _run_dir(tmp_path, "real", 1, [*base, "data.timestamps=data"], {"test/hr@10": 0.20})
    _run_dir(tmp_path, "positions", 1, [*base, "data.timestamps=positions"], {"test/hr@10": 0.19})

    rows = summarize(collect_runs([tmp_path]))

    assert {r["dataset"] for r in rows} == {"ml_100k"}
    assert sorted(r["variant"] for r in rows) == ["data.timestamps=data", "data.timestamps=positions"]
    assert all(r["published"] is None for r in rows)  # ML-1M's paper numbers do not apply to ML-100K


def test_best_epoch_from_the_job_log_line(tmp_path: Path) -> None:
    for seed, (epoch, log_name) in enumerate([(50, "ml_1m_seq_hstu_large_mol.log"), (70, "console.log")], 1):
        run = _run_dir(tmp_path, f"s{seed}", seed, [PRESET, f"seed={seed}"], {"test/hr@10": 0.3})
        (run / log_name).write_text(
            "[2026-11-30 14:55:45,678][__main__][INFO] - ml-1m-seq: reusing prepared data\n"
            "[2026-11-30 14:55:45,678][__main__][INFO] - best checkpoint: "
            f"/tmp/x/checkpoints/epoch_{epoch:03d}.ckpt\n"
        )
    _run_dir(tmp_path, "nolog", 1, [PRESET, "model.x=1", "seed=1"], {"test/hr@10": 0.3})

    rows = summarize(collect_runs([tmp_path]))

    preset = next(r for r in rows if r["variant"] == "preset")
    assert preset["best_epoch"] == {"mean": 60.0, "min": 50, "max": 70, "n": 2}
    assert next(r for r in rows if r["variant"] != "preset")["best_epoch"] is None
    text = markdown(rows)
    assert "| best epoch |" in text and "| 2 | 60.0 (50–70) |" in text and "| 1 | – |" in text


def test_best_epoch_from_epochs_csv_ignores_the_post_fit_validation(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, "a", 1, [PRESET, "seed=1"], {"test/hr@10": 0.3})
    # epochs 1 and 3 tie: ModelCheckpoint keeps the first; the post-fit re-validation (epoch 4) reads higher
    path = _epochs_csv(run, [0.1, 0.3, 0.2, 0.3], post_fit=0.31)

    curve = read_epochs_csv(path)
    assert sorted(curve) == [0, 1, 2, 3]
    assert curve[2] == {"val/hr@10": pytest.approx(0.4), "val/ndcg@10": pytest.approx(0.2)}
    assert sorted(read_epochs_csv(path, trained_epochs=3)) == [0, 1, 2]  # run.json's epochs bound fit's rows
    [row] = summarize(collect_runs([tmp_path]))
    assert row["best_epoch"] == {"mean": 1.0, "min": 1, "max": 1, "n": 1}


def test_the_selected_checkpoint_wins_over_the_csv_argmax(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = _run_dir(tmp_path, "a", 1, [PRESET, "seed=1"], {"test/hr@10": 0.3})
    _epochs_csv(run, [0.1, 0.3, 0.2])
    (run / "x.log").write_text("best checkpoint: /tmp/a/checkpoints/epoch_002.ckpt\n")
    with caplog.at_level(logging.WARNING):
        [row] = summarize(collect_runs([tmp_path]))
    assert row["best_epoch"]["mean"] == 2
    assert "epoch_002.ckpt (epoch 2) but epochs.csv peaks at epoch 1" in caplog.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("epoch,step,train/loss\n0,1,2.0\n", "no column val/ndcg@10"),
        ("epoch,step,val/ndcg@10\n0,9,0.1\n1,19,oops\n", "epochs.csv:3: not a number"),
        ("epoch,step,val/ndcg@10,train/loss\n0,4,,5.0\n", "no epoch-level validation row"),
        ("", "no column epoch, step, val/ndcg@10"),
    ],
)
def test_a_bad_epochs_csv_is_named(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "epochs.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        read_epochs_csv(path)
    assert str(path) in str(error.value)


def test_figures_per_dataset_with_curves_and_a_malformed_file_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runs_root, docs = tmp_path / "runs", tmp_path / "docs"
    for seed, ndcg in [(1, [0.1, 0.2, 0.25]), (2, [0.12, 0.22])]:  # seeds of unequal length
        _epochs_csv(_run_dir(runs_root, f"mol{seed}", seed, [PRESET, f"seed={seed}"], {}), ndcg)
    _run_dir(runs_root, "n512", 1, [PRESET, "model.n=512", "seed=1"], {"test/hr@10": 0.3})
    bad = _run_dir(runs_root, "bad", 1, [PRESET, "model.bad=1", "seed=1"], {"test/hr@10": 0.3})
    (bad / "epochs.csv").write_text("epoch,step,val/ndcg@10\n0,9,not-a-number\n")
    (bad / "x.log").write_text("best checkpoint: /tmp/bad/checkpoints/epoch_004.ckpt\n")
    _run_dir(runs_root, "other", 1, [PRESET, "data=ml_100k", "seed=1"], {"test/hr@10": 0.2})

    with caplog.at_level(logging.WARNING):
        runs = collect_runs([runs_root])
    assert f"skipping the learning curve of {bad}: {bad / 'epochs.csv'}:2: not a number" in caplog.text
    rows = summarize(runs)
    assert len(rows) == 4  # the malformed file costs its curve, not its row
    assert next(r for r in rows if r["variant"] == "model.bad=1")["best_epoch"]["mean"] == 4

    figures = write_learning_curves(runs, docs)

    assert list(figures) == ["ml_1m_seq"]  # ml_100k has no epochs.csv: no figure
    assert figures["ml_1m_seq"]["missing"] == [
        "hstu_large / mol / model.bad=1",
        "hstu_large / mol / model.n=512",
    ]
    assert (docs / "results_ml_1m_seq.png").read_bytes().startswith(PNG_MAGIC)
    assert not (docs / "results_ml_100k.png").exists()
    text = markdown(rows, figures=figures)
    assert "![ml_1m_seq: validation metrics per epoch](results_ml_1m_seq.png)" in text
    assert (
        "Not in the figure (no `epochs.csv`): hstu_large / mol / model.bad=1; hstu_large / mol / model.n=512."
        in text
    )
    assert "results_ml_100k.png" not in text and text.count("![") == 1


def test_make_results_script_writes_linked_figures_only_where_curves_exist(tmp_path: Path) -> None:
    runs_root, docs = tmp_path / "runs", tmp_path / "docs"
    _epochs_csv(_run_dir(runs_root, "a", 1, [PRESET, "seed=1"], {"test/hr@10": 0.3}), [0.1, 0.2])
    _run_dir(runs_root, "b", 1, [PRESET, "data=ml_100k", "seed=1"], {"test/hr@10": 0.2})
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold\n<!-- results:end -->\n")
    command = [sys.executable, str(REPO / "scripts" / "make_results.py"), str(runs_root)]
    command += [
        "--json",
        str(docs / "results.json"),
        "--md",
        str(docs / "results.md"),
        "--readme",
        str(readme),
    ]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)

    assert sorted(p.name for p in docs.iterdir()) == ["results.json", "results.md", "results_ml_1m_seq.png"]
    assert "](results_ml_1m_seq.png)" in (docs / "results.md").read_text()
    rows = json.loads((docs / "results.json").read_text())
    assert {r["dataset"]: r["best_epoch"] for r in rows}["ml_1m_seq"] == {
        "mean": 1,
        "min": 1,
        "max": 1,
        "n": 1,
    }
    assert "| ml_1m_seq | hstu_large | mol |" in readme.read_text()


def test_forty_series_get_forty_distinct_line_styles() -> None:
    assert len({line_style(i) for i in range(40)}) == 40
