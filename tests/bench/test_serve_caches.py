"""The serve suite's ``--caches`` timings on the tiny model on a CPU, against the session's app (starting the whole
suite's own Ray and Serve takes about 90 s here): every case answered, timed and compared."""

from __future__ import annotations

import io

import httpx
import numpy as np
from PIL import Image

from bench.serve import build_parser, cache_timings, reference_files
from tests.helpers import REPO

CASES = ("t2i:new_prompt", "t2i:same_prompt", "edit:new_reference", "edit:chained", "edit:same_reference")


def test_cache_timings_time_every_case_over_http(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=120) as http:
        out = cache_timings(http, "tiny-dev", 64, 2, 2, photo=REPO / "examples" / "cat.png")
    for case in CASES:
        assert out[case]["statuses"] == [200] and out[case]["n"] == 2, out
        assert out[case]["http_ms_p50"] > out[case]["generate_ms_p50"] > 0
    assert {"same_prompt_saves_ms", "chained_speedup", "same_reference_speedup"} <= set(out)
    assert build_parser().parse_args(["--source", "s", "--cache", "c", "--json", "j", "--caches"]).caches


def test_new_references_are_different_files_of_the_asked_size() -> None:
    for photo in (None, REPO / "examples" / "style.jpg"):
        files = reference_files(3, 96, photo)
        assert len(set(files)) == 3
        assert all(np.asarray(Image.open(io.BytesIO(data))).shape == (96, 96, 3) for data in files)
