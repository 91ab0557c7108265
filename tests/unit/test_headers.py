"""deployments/openai/headers.py: what ran, and where the time went, as response headers."""

from __future__ import annotations

import numpy as np
import pytest

from deployments.config import ModelConfig
from deployments.openai.headers import Clock, image_headers, stages, stream_headers
from deployments.types import AdapterStack, ImageRequest, ImageResult, Route, Timings

ROUTE = Route(ModelConfig(name="klein", default_size=(64, 64)), AdapterStack((("ink", 0.5),)))
CLOCK = Clock(arrived=100.0, parsed=100.2, returned=103.0, done=103.3)


def result(started_at: float, **timings: float) -> ImageResult:
    images = [np.zeros((8, 8, 3), np.uint8)] * 2
    return ImageResult(
        images,
        seed=7,
        num_inference_steps=4,
        guidance_scale=1.0,
        weights="random-tiny",
        timings=Timings(started_at=started_at, batch_size=2, **timings),
        mask_applied=True,
    )


def server_timing(headers: dict[str, str]) -> dict[str, float]:
    return {key: float(value) for key, value in (part.split(";dur=") for part in headers["server-timing"].split(", "))}


@pytest.mark.parametrize("started_at", [101.0, 99.0], ids=["queued", "clocks apart"])
def test_the_stages_add_up_to_the_total(started_at: float) -> None:
    """Whatever the replica's clock says, the six stages are the ingress's whole time, none negative."""
    timed = result(started_at, adapter_s=0.1, generate_s=1.2, output_s=0.05)
    split = stages(timed, CLOCK)
    assert list(split) == ["parse", "queue", "adapter", "generate", "handle", "encode"]
    assert sum(split.values()) == pytest.approx(CLOCK.done - CLOCK.arrived)
    assert min(split.values()) >= 0
    headers = image_headers(ROUTE, timed, CLOCK)
    assert sum(server_timing(headers).values()) == pytest.approx(float(headers["x-total-ms"]), abs=0.5)
    assert float(headers["x-total-ms"]) == pytest.approx(3300.0)


def test_the_queue_header_runs_from_arrival_to_the_start_of_generation() -> None:
    headers = image_headers(ROUTE, result(101.0, generate_s=1.2), CLOCK)
    assert float(headers["x-queue-ms"]) == pytest.approx(1000.0)
    assert server_timing(headers)["queue"] == pytest.approx(800.0)
    assert headers["x-generate-ms"] == "1200.0"


def test_what_ran_is_in_the_headers() -> None:
    headers = image_headers(ROUTE, result(101.0), CLOCK)
    assert headers["x-model"] == "klein" and headers["x-lora"] == ROUTE.adapters.id == "ink:0.5"
    assert (headers["x-seed"], headers["x-num-inference-steps"], headers["x-batch-size"]) == ("7", "4", "2")
    assert (headers["x-model-weights"], headers["x-mask-applied"], headers["x-step-cache"]) == (
        "random-tiny",
        "true",
        "false",
    )


def test_a_stream_sends_what_the_request_fixed() -> None:
    request = ImageRequest(prompt="p", width=64, height=64, seed=42)
    assert stream_headers(ROUTE, request) == {"x-model": "klein", "x-seed": "42", "x-lora": "ink:0.5"}
