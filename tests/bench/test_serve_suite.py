"""The serve suite on a CPU, in parts, since starting its own Ray and Serve takes about 90 s here: against a running
server (``--url``, the session's app on the tiny models), every series and every cache case answered and timed; and
the plain diffusers baseline that ``--plain`` adds, in process."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from bench.suites.serve import main, plain_diffusers, reference_files
from tests.helpers import REPO

CASES = ("t2i:new_prompt", "t2i:same_prompt", "edit:new_reference", "edit:chained", "edit:same_reference")


def test_a_running_server_is_measured_with_new_requests_and_the_cached_cases(base_url: str, tmp_path: Path) -> None:
    report = tmp_path / "serve.json"
    photo = REPO / "examples" / "cat.png"
    argv = ["--url", base_url, "--models", "tiny-dev", "--size", "64", "--steps", "2", "--n", "2", "--json"]
    main([*argv, str(report), "--formats", "png,jpeg", "--caches", "--reference", str(photo)])
    result = json.loads(report.read_text())
    for series in ("t2i:png", "t2i:jpeg", "edit1:png", "edit1:jpeg"):
        assert result[series]["statuses"] == [200] and result[series]["http_total_s"]["n"] == 2, result[series]
    caches = result["tiny-dev caches"]
    for case in CASES:
        assert caches[case]["statuses"] == [200] and caches[case]["n"] == 2, caches
        assert caches[case]["http_ms_p50"] > caches[case]["generate_ms_p50"] > 0
    assert {"same_prompt_saves_ms", "chained_speedup", "same_reference_speedup"} <= set(caches)
    assert result["tiny-dev jpeg_fidelity"]["psnr_db_vs_png"] > 20


def test_new_references_are_different_files_of_the_asked_size() -> None:
    for photo in (None, REPO / "examples" / "style.jpg"):
        files = reference_files(3, 96, photo)
        assert len(set(files)) == 3
        assert all(np.asarray(Image.open(io.BytesIO(data))).shape == (96, 96, 3) for data in files)


def test_plain_times_the_call_and_the_png_save_for_both_tasks() -> None:
    out = plain_diffusers("random-klein-4b", 64, 1, 2)  # no GPU: klein's tiny pipeline stands in
    assert out.pop("what").startswith("tiny-klein ")
    assert set(out) == {"t2i:call", "t2i:call+png", "edit1:call", "edit1:call+png"}
    assert all(timed["n"] == 2 and timed["min"] > 0 for timed in out.values())
