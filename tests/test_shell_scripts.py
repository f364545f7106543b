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
