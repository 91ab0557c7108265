"""The serve suite's plain diffusers baseline (``--plain``) on the tiny model on a CPU. The whole suite starts
Ray and Serve (about 90 s here), so this times the part ``--plain`` adds, in process."""

from __future__ import annotations

from bench.suites.serve import plain_diffusers


def test_plain_times_the_call_and_the_png_save_for_both_tasks() -> None:
    out = plain_diffusers("random-klein-4b", 64, 1, 2)  # no GPU: klein's tiny pipeline stands in
    assert out.pop("what").startswith("tiny-klein ")
    assert set(out) == {"t2i:call", "t2i:call+png", "edit1:call", "edit1:call+png"}
    assert all(timed["n"] == 2 and timed["min"] > 0 for timed in out.values())
