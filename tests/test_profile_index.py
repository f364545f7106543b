"""scripts/profile_index.py (the ClusteredTopK search profile) on a tiny structured corpus on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "profile_index.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def test_profile_writes_one_row_per_setting_with_latency_recall_and_top_operators(tmp_path: Path) -> None:
    configs = ["num_lists=4,shortlist=4,num_probes=4,num_candidates=3000", "num_lists=6,num_probes=2"]
    done = run(
        "--items", "3000", "--setting", "3x2x8", "--batch", "4", "--k", "10", "--train-steps", "2",
        "--top", "5", "--out", str(tmp_path), "--configs", *configs,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "profile_index.json").read_text())
    assert record["items"] == 3000 and record["setting"] == "3x2x8" and record["gpu"] == "CPU"
    assert [row["config"] for row in record["rows"]] == configs
    full, small = record["rows"]
    assert full["recall"] == 1.0 and full["probed"] == 1.0  # every list probed, every member kept: exact
    assert 0.0 <= small["candidates"] <= small["probed"] <= 1.0
    for row in record["rows"]:
        assert row["eager_ms"] > 0 and row["graphs_ms"] > 0 and 0 < len(row["kernels"]) <= 5
    page = (tmp_path / "profile_index.md").read_text()
    assert page.count("\n## ") == 2 and "| kernel | calls | ms |" in page


def test_bad_settings_name_the_key_or_value(tmp_path: Path) -> None:
    unknown = run("--out", str(tmp_path), "--configs", "num_list=4")
    assert unknown.returncode != 0 and "'num_list=4' is not KEY=VALUE" in unknown.stderr
    not_number = run("--out", str(tmp_path), "--configs", "num_probes=many")
    assert not_number.returncode != 0 and "num_probes='many' is not a number" in not_number.stderr


def test_the_fused_kernel_profile_refuses_a_machine_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the profile instead of refusing it")
    script = SCRIPT.with_name("profile_fused_exact.py")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode != 0 and "run it on a GPU machine" in done.stderr


@pytest.mark.slow
def test_the_fused_kernel_profile_runs_under_the_triton_interpreter(tmp_path: Path) -> None:
    """The script end to end on CPU (every variant launches; timings of the interpreter mean nothing)."""
    pytest.importorskip("triton")
    script = SCRIPT.with_name("profile_fused_exact.py")
    args = [
        "--items",
        "2000",
        "--setting",
        "3x2x8",
        "--batch",
        "4",
        "--k",
        "10",
        "--runs",
        "1",
        "--sample-stride",
        "8",
        "--blocks",
        "4x8",
        "4x16x2",
        "--splits",
        "1",
        "2",
        "--hidden-chunks",
        "0",
        "64",
        "--step-tiles",
        "1",
        "2",
    ]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, str(script), *args, "--train-steps", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "profile_fused_exact.json").read_text())
    assert [row["ablate"] for row in record["rows"]] == [0, 0, 0, 0, 1, 2, 3, 0, 0]
    assert [row["two_pass"] for row in record["rows"]] == [False] * 7 + [True] * 2
    assert [row["merge_tiles"] for row in record["rows"]] == [1, 1, 4, 16, 1, 1, 1, 1, 1]
    assert all(row["ms"] > 0 and row["block"] for row in record["rows"])
    assert "| no top-k merge |" in (tmp_path / "profile_fused_exact.md").read_text()
    grid = record["block_rows"]  # every (block, splits, hidden chunk, tiles per step) launch, each exact
    launches = [(r["block_q"], r["block_x"], r["num_warps"], r["num_splits"], r["hidden_chunk"], r["step_tiles"])
                for r in grid]  # fmt: skip
    assert launches == [(4, 8, None, s, h, t) for s in (1, 2) for h in (None, 64) for t in (1, 2)] + [
        (4, 16, 2, s, h, t) for s in (1, 2) for h in (None, 64) for t in (1, 2)
    ]  # fmt: skip
    assert all(
        r["agreement"] == 1.0 and tuple(r["block"][:3]) == (4, r["block_x"], r["num_warps"] or r["block"][2])
        for r in grid
    )
    assert "| 4 | 16 | 2 | 2 | 64 |" in (tmp_path / "profile_fused_exact.md").read_text()


@pytest.mark.slow
def test_the_fused_kernel_profile_compares_the_two_merges_of_the_one_pass_search(tmp_path: Path) -> None:
    """``--grid-search one-pass --merge-tiles 1 4``: both merges per launch, each exact."""
    pytest.importorskip("triton")
    script = SCRIPT.with_name("profile_fused_exact.py")
    args = ["--items", "1500", "--setting", "3x2x8", "--batch", "4", "--k", "30", "--runs", "1", "--blocks", "4x8",
            "--splits", "1", "--grid-search", "one-pass", "--merge-tiles", "1", "4", "--train-steps", "2"]  # fmt: skip
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, str(script), *args, "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    grid = json.loads((tmp_path / "profile_fused_exact.json").read_text())["block_rows"]
    assert [r["merge"] for r in grid] == [1, 4]
    assert all(r["agreement"] == 1.0 for r in grid)
    text = (tmp_path / "profile_fused_exact.md").read_text()
    assert "untuned launches of the one-pass search" in text and "| all | 4 |" in text


def test_the_fused_kernel_profile_refuses_malformed_blocks(tmp_path: Path) -> None:
    script = SCRIPT.with_name("profile_fused_exact.py")
    for bad in ("32", "4x-8", "1x2x3x4", "0x8", "4x8x4:16"):
        done = subprocess.run(
            [sys.executable, str(script), "--blocks", "4x8", bad, "--out", str(tmp_path)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        expected = "give hidden steps with --hidden-chunks" if ":" in bad else "is not BQxBX[xWARPS]"
        assert done.returncode == 2 and f"--blocks {bad!r}" in done.stderr and expected in done.stderr


def _compile_ahead_of_time(name: str, args: list[str], out: Path) -> subprocess.CompletedProcess[str]:
    """scripts/<name> ``args`` --out ``out``: a compile for sm_90 without a GPU (skips where Triton is missing)."""
    pytest.importorskip("triton")
    command = [sys.executable, str(SCRIPT.with_name(name)), *args, "--out", str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_kernel_registers_compiles_the_fused_kernel_ahead_of_time(tmp_path: Path) -> None:
    """scripts/kernel_registers.py on this CPU machine: Triton's bundled ptxas compiles the kernel for sm_90 and
    the cubin's resource usage comes back per launch shape, with the register-bound programs per SM."""
    script = SCRIPT.with_name("kernel_registers.py")
    args = ["--configs", "4x16x4", "4x16x4:16", "--setting", "3x2x8", "--hidden", "32", "--k", "10"]
    done = _compile_ahead_of_time("kernel_registers.py", args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "kernel_registers.json").read_text())
    assert record["arch"] == 90 and record["setting"] == "3x2x8"
    assert [(r["block_q"], r["block_x"], r["num_warps"], r["hidden_chunk"]) for r in record["rows"]] == [
        (4, 16, 4, 32), (4, 16, 4, 16)
    ]  # fmt: skip
    for row in record["rows"]:
        assert 16 <= row["reg"] <= 255 and row["stack"] >= 0
        per_warp = -(-row["reg"] * 32 // 256) * 256
        assert row["programs_per_sm"] == min(65536 // (per_warp * 4), 2048 // 128)
    assert "| 4 | 16 | 4 | 16 |" in (tmp_path / "kernel_registers.md").read_text()
    bad = subprocess.run(
        [sys.executable, str(script), "--configs", "4x16", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--configs '4x16' names no warp count: BQxBXxWARPS" in bad.stderr
    invalid = subprocess.run(
        [sys.executable, str(script), "--configs", "1x8x4", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert invalid.returncode != 0 and "not a valid tile for 8x4x64" in invalid.stderr


SASS_LISTING = """
\t//## File "/x/mol_topk_kernel.py", line 10
        /*0000*/                   IMAD.MOV.U32 R1, RZ, RZ, c[0x0][0x28] ;
.L_x_0:
\t//## File "/x/mol_topk_kernel.py", line 20
        /*0010*/                   MUFU.TANH R2, R3 ;
        /*0020*/                   FFMA R7, R8, R9, R10 ;
        /*0030*/              @!P0 BRA `(.L_x_1) ;
\t//## File "/x/standard.py", line 300
        /*0040*/                   SEL R4, R5, R6, P1 ;
        /*0050*/                   SHFL.BFLY PT, R4, R5, 0x1, 0x1f ;
        /*0060*/                   SEL R4, R5, R6, P1 ;
.L_x_1:
\t//## File "/x/mol_topk_kernel.py", line 30
        /*0070*/                   MUFU.EX2 R7, R8 ;
        /*0080*/               @P0 BRA `(.L_x_0) ;
        /*0090*/                   EXIT ;
"""


def test_kernel_sass_counts_the_tile_loop_of_a_listing(tmp_path: Path) -> None:
    """scripts/kernel_sass.py --sass-file: the loop body split at its forward branch (the merge), per-line counts,
    and the issue / MUFU bounds from them."""
    script = SCRIPT.with_name("kernel_sass.py")
    listing = tmp_path / "listing.sass"
    listing.write_text(SASS_LISTING)
    args = ["--configs", "8x8x4", "--sass-file", str(listing), "--items", "1000", "--batch", "16", "--sms", "2",
            "--clock-ghz", "1.0", "--k", "4096", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    row = json.loads((tmp_path / "kernel_sass.json").read_text())["rows"][0]
    # always: MUFU, FFMA, BRA (forward) + MUFU, BRA (back); merge: SEL, SHFL, SEL
    assert (row["per_tile"], row["merge_branch"], row["mufu_per_tile"]) == (5, 3, 2)
    tiles = 2 * 125  # ceil(16 / 8) query blocks x ceil(1000 / 8) tiles
    assert row["issue_bound_ms"]["1000"] == pytest.approx(1e3 * tiles * 4 * 5 / (4 * 2 * 1e9))
    assert row["mufu_bound_ms"]["1000"] == pytest.approx(1e3 * tiles * 4 * 2 * 32 / (16 * 2 * 1e9))
    # k above the split's length: every tile merges, so the bound adds the whole merge branch per tile
    assert row["merges"]["1000"]["merge_fraction"] == pytest.approx(1.0)
    assert row["issue_bound_with_merges_ms"]["1000"] == pytest.approx(
        row["issue_bound_ms"]["1000"] * (5 + 3) / 5
    )
    assert row["lines"][0] == {"line": "mol_topk_kernel.py:20", "instructions": 3,
                               "opcodes": {"MUFU": 1, "FFMA": 1, "BRA": 1}}  # fmt: skip
    assert "| 8 | 8 | 4 | 5 | 3 | 2 |" in (tmp_path / "kernel_sass.md").read_text()
    listing.write_text(SASS_LISTING.replace("@P0 BRA `(.L_x_0)", "NOP"))
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "no tile loop found" in done.stderr


def test_kernel_sass_reads_the_compiled_kernel(tmp_path: Path) -> None:
    """scripts/kernel_sass.py on this CPU machine: the sm_90 compile's tile loop has MUFU work in every tile."""
    args = ["--configs", "4x16x4", "--setting", "3x2x8", "--hidden", "32", "--k", "10", "--items", "4096"]
    done = _compile_ahead_of_time("kernel_sass.py", args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    row = json.loads((tmp_path / "kernel_sass.json").read_text())["rows"][0]
    assert row["per_tile"] > 50 and row["mufu_per_tile"] > 0 and row["merge_branch"] > 0
    assert any(entry["line"].startswith("mol_topk_kernel.py:") for entry in row["lines"])


def test_kernel_sass_counts_a_parked_groups_sort_once_per_group(tmp_path: Path) -> None:
    """With merge_tiles > 1 the merge branch holds an inner branch (the sort of the parked tiles): counted once per
    min(merge_tiles, K_PAD // BX) merged tiles."""
    listing = tmp_path / "listing.sass"
    inner = "        /*0045*/              @!P1 BRA `(.L_x_1) ;\n"
    listing.write_text(SASS_LISTING.replace("SEL R4, R5, R6, P1 ;\n", "SEL R4, R5, R6, P1 ;\n" + inner, 1))
    args = ["--configs", "8x8x4", "--sass-file", str(listing), "--one-pass", "--merge-tiles", "4", "--k", "100",
            "--items", "1000", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(SCRIPT.with_name("kernel_sass.py")), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    row = json.loads((tmp_path / "kernel_sass.json").read_text())["rows"][0]
    # merge branch: SEL + the inner BRA; inner: SHFL + SEL, once per 4 merged tiles (K_PAD 128 // BX 8 = 16 >= 4)
    assert (row["merge_branch"], row["merge_inner"], row["slots"]) == (2, 2, 4)
    assert row["per_merge"] == pytest.approx(2 + 2 / 4)
