"""The soak suite on a CPU: the harness in process for ~20 s against the session's app (tiny-dev and tiny-klein,
64x64 warm), with a burst and hung-up streams."""

from __future__ import annotations

import json
from pathlib import Path

from bench.suites.soak import build_parser, print_table, run

SOAK = (
    *("--duration", "20", "--workers", "2", "--burst", "6", "--max-n", "2"),
    *("--sizes", "64x64", "--off-sizes", "128x64", "--mix", "stream=0.3,drop=0.4", "--settle", "20"),
)


def test_soak_loses_nothing_and_every_image_is_counted(
    base_url: str, ray_cluster: dict[str, int], tmp_path: Path
) -> None:
    metrics = f"http://127.0.0.1:{ray_cluster['metrics']}/metrics"
    out = tmp_path / "soak.json"
    args = build_parser().parse_args(
        [*SOAK, "--url", base_url, "--json", str(out), "--metrics-url", metrics, "--metrics-app", "flux2"]
    )
    report = run(args)
    print_table(report)
    assert report["passed"] and not report["problems"], report["problems"]
    assert report["unexpected_5xx"] == 0 and report["verdicts"]["ok"] >= 20
    mix = report["mix"]
    assert min(mix["t2i"], mix["edit"], mix["masked"], mix["two_refs"], mix["off_warm_size"]) > 0, mix
    assert report["verdicts"]["dropped"] >= 2  # streams hung up on after their first event
    assert set(mix["n"]) == {1, 2} and set(mix["models"]) == {"tiny-dev", "tiny-klein"}
    burst = report["burst"]
    assert burst["requests"] == 6 and set(burst["verdicts"]) <= {"ok", "rejected"}, burst
    for kind in ("t2i", "edit"):  # the latency of both ends of the run
        assert report["latency_s"][kind]["first_quarter"]["n"] and report["latency_s"][kind]["last_quarter"]["n"]
    assert report["metrics"]["oom_recoveries_delta"] == report["metrics"]["compile_events_delta"] == 0  # no compile
    assert json.loads(out.read_text())["passed"]
    received, counted = report["images_received"], report["metrics"]["images_out_delta"]
    assert received["non_streamed"] > 0 and received["streamed"] > 0
    assert counted == received["non_streamed"] + received["streamed"], (
        f"ray_flux2_images_out_total rose by {counted:g}; received {received['non_streamed']} non-streamed "
        f"+ {received['streamed']} streamed images"
    )
