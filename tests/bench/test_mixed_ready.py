"""The mixed and ready suites on the tiny model on a CPU."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest


def test_mixed_requests_are_counted_per_shape(bench: Callable, tmp_path: Path) -> None:
    out = tmp_path / "mixed.json"
    shapes = ("--shapes", "64x64+0,64x96+1", "--warmup", "64x64+0")
    bench("mixed", "--source", "tiny-klein", "--requests", "3", "--steps", "1", *shapes, "--json", str(out))
    result = json.loads(out.read_text())
    assert result["requests"] == 3 and result["ooms"] == result["other_errors"] == 0
    assert sum(shape["n"] for shape in result["latency_s_by_shape"].values()) == 3


def test_ready_needs_an_empty_cache_for_its_cold_run(bench: Callable, tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "left-over").write_text("")
    with pytest.raises(subprocess.CalledProcessError) as refused:
        bench("ready", "--source", "tiny-klein", "--cache", str(tmp_path / "cache"), "--json", str(tmp_path / "r.json"))
    assert "holds files" in refused.value.stderr
