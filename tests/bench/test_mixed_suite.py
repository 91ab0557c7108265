"""The mixed suite on the tiny model on a CPU."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def test_mixed_requests_are_counted_per_shape(bench: Callable, tmp_path: Path) -> None:
    out = tmp_path / "mixed.json"
    shapes = ("--shapes", "64x64+0,64x96+1", "--warmup", "64x64+0")
    bench("mixed", "--source", "tiny-klein", "--requests", "3", "--steps", "1", *shapes, "--json", str(out))
    result = json.loads(out.read_text())
    assert result["requests"] == 3 and result["ooms"] == result["other_errors"] == 0
    assert sum(shape["n"] for shape in result["latency_s_by_shape"].values()) == 3
