"""The bench suites run as a user runs them: ``python -m bench SUITE ...`` in a subprocess, on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench() -> Callable[..., subprocess.CompletedProcess]:
    """``bench("engine", "--help")`` runs ``python -m bench engine --help`` from the repository root, no GPU;
    ``env`` adds variables to the environment it runs in."""

    def run(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        env = os.environ | {"CUDA_VISIBLE_DEVICES": ""} | (env or {})
        command = [sys.executable, "-m", "bench", *args]
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=True)

    return run
