"""The speed-option benchmark's plumbing on the tiny model (its figures mean nothing on a CPU)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def test_speed_options_report_speedup_and_deviation(bench: Callable, tmp_path: Path) -> None:
    out = tmp_path / "so.json"
    variant = 'step_cache=taylorseer,step_cache_options={"cache_interval": 3, "disable_cache_before_step": 4}'
    bench(
        *("options", "--source", "tiny-klein", "--size", "64", "--steps", "10", "--references", "1", "--repeats", "1"),
        *("--variant", variant, "--json", str(out)),
    )
    rows = json.loads(out.read_text())["rows"]
    assert [row["variant"] for row in rows] == ["compile=none", variant]
    assert rows[0]["rel_l2"] == 0 and rows[0]["cosine"] == 1
    assert 0 < rows[1]["rel_l2"] < 0.05 and rows[1]["cosine"] > 0.99 and rows[1]["speedup"] > 0
    for row in rows:  # every stage of the edit ran and was timed
        stages = row["stage_ms_p50"]
        assert set(stages) == {"transformer", "text_encoder", "vae_encode", "vae_decode", "other"}
        assert all(stages[name] > 0 for name in ("transformer", "text_encoder", "vae_encode", "vae_decode"))
