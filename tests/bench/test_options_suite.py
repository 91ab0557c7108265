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


def test_one_run_times_every_shape_and_tabulates_the_rows(bench: Callable, tmp_path: Path) -> None:
    out = tmp_path / "ladder.json"
    printed = bench(
        *("options", "--source", "tiny-klein", "--steps", "2", "--repeats", "1", "--floors"),
        *("--shapes", "64x64+0,80x64+1", "--variant", "compile=none,preset=fast", "--variant", "dtype=bfloat16"),
        *("--variant", "attention_backend=fa3", "--json", str(out)),
    ).stdout
    result = json.loads(out.read_text())
    assert result["floors"] == {"skipped": "no GPU"}
    rows = result["rows"]
    assert [(row["variant"], row["shape"]) for row in rows[:4]] == [
        ("compile=none", "64x64+0"),
        ("compile=none", "80x64+1"),
        ("compile=none,preset=fast", "64x64+0"),
        ("compile=none,preset=fast", "80x64+1"),
    ]
    for row in rows[:4]:  # on a CPU the preset runs neither fp8 nor FA3: the baseline's bytes
        assert (
            row["rel_l2"] == 0
            and row["step_ms"] > 0
            and row["runs"]
            == {
                "attention_backend": "default",
                "quantization": "none",
            }
        )
    assert all(0 < row["rel_l2"] < 0.1 for row in rows[4:6])  # bfloat16 moves the pixels by rounding only
    assert [row["shape"] for row in rows[6:]] == ["64x64+0", "80x64+1"]  # fa3 cannot build here: recorded
    assert all("cannot run here" in row["error"] for row in rows[6:])
    assert result["table"].count("\n") == 2 + len(rows) - 1 and result["table"] in printed
    assert len({line.count("|") for line in result["table"].splitlines()}) == 1  # every row fills every column
