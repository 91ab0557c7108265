"""The ready suite on a CPU: its cold run refuses a compile cache that holds files."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest


def test_ready_needs_an_empty_cache_for_its_cold_run(bench: Callable, tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "left-over").write_text("")
    with pytest.raises(subprocess.CalledProcessError) as refused:
        bench("ready", "--source", "tiny-klein", "--cache", str(tmp_path / "cache"), "--json", str(tmp_path / "r.json"))
    assert "holds files" in refused.value.stderr
