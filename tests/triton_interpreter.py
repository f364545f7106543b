"""Run a test module's ``__main__`` checks under the Triton CPU interpreter in a subprocess.

``TRITON_INTERPRET`` must be set before Triton is imported, so kernel checks on CPU run in a fresh
interpreter: ``python -m tests.<module>`` with ``TRITON_INTERPRET=1``, which prints ``marker`` when every
check passed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_interpreted(module: str, marker: str, timeout: int = 600) -> None:
    """Run ``python -m <module>`` with ``TRITON_INTERPRET=1`` and assert that it printed ``marker``."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", module],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert marker in proc.stdout, proc.stdout[-4000:] + proc.stderr[-4000:]
