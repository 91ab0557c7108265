"""Batching: concurrent text-to-image requests with the same shape share one pipeline call."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from deployments.config import ModelConfig
from deployments.engine import Flux2Engine
from deployments.types import ImageRequest
from tests.helpers import decode_b64_image, png_bytes


def pixels(response: httpx.Response, index: int = 0) -> np.ndarray:
    return np.asarray(decode_b64_image(response.json()["data"][index]["b64_json"]), dtype=np.int16)


def test_engine_batch_matches_single_requests() -> None:
    engine = Flux2Engine.from_config(ModelConfig(source="tiny-klein"))
    requests = [
        ImageRequest(prompt="a cat", width=64, height=64, seed=1),
        ImageRequest(prompt="a red dog", width=64, height=64, seed=7, n=2),
    ]
    batched = engine.generate_batch(requests)
    assert [len(result.images) for result in batched] == [1, 2]
    assert all(result.timings.batch_size == 2 for result in batched)
    for request, result in zip(requests, batched, strict=True):
        alone = engine.generate(request)
        for a, b in zip(alone.images, result.images, strict=True):
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


def test_engine_refuses_to_batch_incompatible_requests() -> None:
    engine = Flux2Engine.from_config(ModelConfig(source="tiny-klein"))
    with pytest.raises(ValueError, match="batch_key"):
        engine.generate_batch(
            [ImageRequest(prompt="a", width=64, height=64), ImageRequest(prompt="b", width=128, height=64)]
        )
    edit = ImageRequest(prompt="a", width=64, height=64, images=(np.zeros((64, 64, 3), np.uint8),))
    with pytest.raises(ValueError, match="batch_key"):
        engine.generate_batch([edit, edit])


def test_concurrent_requests_are_batched_and_answered_correctly(batch_url: str) -> None:
    bodies = [{"prompt": f"a cat {i}", "size": "64x64", "seed": 100 + i} for i in range(4)]
    with httpx.Client(base_url=batch_url, timeout=60) as client, ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda body: client.post("/v1/images/generations", json=body), bodies))
        assert all(response.status_code == 200 for response in responses)
        assert max(int(response.headers["x-batch-size"]) for response in responses) > 1
        for body, response in zip(bodies, responses, strict=True):
            assert response.headers["x-seed"] == str(body["seed"])
            alone = client.post("/v1/images/generations", json=body)
            assert np.abs(pixels(alone) - pixels(response)).max() <= 2  # each caller got its own image


def test_edits_and_other_sizes_are_not_batched_together(batch_url: str) -> None:
    with httpx.Client(base_url=batch_url, timeout=60) as client, ThreadPoolExecutor(4) as pool:
        edits = [
            pool.submit(
                client.post,
                "/v1/images/edits",
                files={"image": ("a.png", png_bytes(64, 64, seed=i), "image/png")},
                data={"prompt": "make it red"},
            )
            for i in range(2)
        ]
        sizes = [
            pool.submit(client.post, "/v1/images/generations", json={"prompt": "x", "size": s})
            for s in ("64x64", "128x64")
        ]
        for future in edits:
            assert future.result().headers["x-batch-size"] == "1"
        shapes = {decode_b64_image(f.result().json()["data"][0]["b64_json"]).size for f in sizes}
        assert shapes == {(64, 64), (128, 64)}
