"""Every shell script of the repository parses (``bash -n``): a syntax error found on the GPU machine costs a
device call of the session's 30 minutes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (REPO_ROOT / "scripts").rglob("*.sh")) + sorted((REPO_ROOT / ".ci").glob("*"))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_shell_script_parses(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{script.relative_to(REPO_ROOT)}: {result.stderr}"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_link_best_checkpoint_links_what_the_sweep_names(tmp_path: Path) -> None:
    """device_site.sh's link_best_checkpoint (the top-k benchmark beside a round's trainings): a sweep whose job 0
    logged its best checkpoint gets a link to it; one that ended without it gets none, and says so."""
    best = tmp_path / "epoch_007.ckpt"
    best.write_bytes(b"weights")
    log_dir = tmp_path / "sweeps" / "named" / "0"
    log_dir.mkdir(parents=True)
    (log_dir / "train.log").write_text(f"epoch 7\nbest checkpoint: {best}\n")
    script = (
        f"SWEEPS={tmp_path / 'sweeps'} && source {REPO_ROOT / 'scripts' / 'device_site.sh'} && "
        "link_best_checkpoint named links/named.ckpt && link_best_checkpoint ended links/ended.ckpt"
    )
    (tmp_path / "links").mkdir()
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "links" / "named.ckpt").resolve() == best.resolve()
    assert not (tmp_path / "links" / "ended.ckpt").exists()
    assert "sweep ended ended without a best checkpoint" in done.stdout
