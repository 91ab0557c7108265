"""The engine suite's sections on the tiny model on a CPU (figures meaningless; the plumbing is what counts)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def test_every_section_runs_or_says_why(bench: Callable, tmp_path: Path) -> None:
    out = tmp_path / "engine.json"
    bench("engine", "tiny", "--size", "64", "--n", "1", "--work", str(tmp_path / "work"), "--json", str(out))
    result = json.loads(out.read_text())
    assert result["skipped:floors"] and result["skipped:fp8"]  # no FLOP count for tiny, no fp8 on a CPU
    assert not [key for key in result if key.startswith("error:")], result
    assert result["load_from_disk"]["s"] > 0 and result["engine_build"]["warmup_s"] > 0
    for section in ("plain", "engine"):
        for series in ("t2i:2steps", "edit1:2steps"):
            assert result[section][series]["e2e_s"]["n"] == 1
            assert result[section][series]["transformer_step_ms"]["n"] == 2  # one transformer call a step
    # an uncompiled engine runs the pipeline plain diffusers runs: no deviation
    assert result["engine"]["deviation_vs_eager"]["one_step"]["rel_l2"] == 0
    assert set(result["vram_policy"]) == {"on_pressure", "always", "releases_total"}
