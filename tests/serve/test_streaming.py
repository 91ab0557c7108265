"""Streaming (stream=true): OpenAI Images server-sent events with progress, previews and the result."""

from __future__ import annotations

import json
import time

import httpx
import openai

from tests.helpers import decode_b64_image, png_bytes


def read_events(response: httpx.Response) -> list[dict]:
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            payload = json.loads(line.removeprefix("data:"))
            assert payload["type"] == name  # the SSE event name and the payload type agree
            events.append(payload)
    return events


def test_generation_stream_progress_previews_and_result(client: httpx.Client) -> None:
    body = {"prompt": "a cat", "size": "96x64", "seed": 21, "num_inference_steps": 6, "model": "tiny-dev"}
    with client.stream("POST", "/v1/images/generations", json={**body, "stream": True, "partial_images": 2}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-seed"] == "21" and r.headers["x-model"] == "tiny-dev"
        events = read_events(r)
    kinds = [event["type"] for event in events]
    assert kinds[-1] == "image_generation.completed" and kinds.count("image_generation.completed") == 1
    steps = [event["step"] for event in events if event["type"] == "image_generation.progress"]
    assert steps == [1, 2, 3, 4, 5, 6] and all(e["num_steps"] == 6 for e in events if "num_steps" in e)
    partials = [event for event in events if event["type"] == "image_generation.partial_image"]
    assert [p["partial_image_index"] for p in partials] == [0, 1]
    assert all(decode_b64_image(p["b64_json"]).size == (96, 64) for p in partials)
    final = decode_b64_image(events[-1]["b64_json"])
    assert final.size == (96, 64) and events[-1]["size"] == "96x64"
    assert 0 < events[-1]["generate_ms"] <= 1000 * events[-2]["elapsed_s"] + 1000  # the engine's time, as a header
    # Streaming changes how the result travels, not the result: same seed, same bytes as without it.
    plain = client.post("/v1/images/generations", json=body).json()["data"][0]["b64_json"]
    assert plain == events[-1]["b64_json"]


def test_stream_with_n_images_ends_with_one_completed_event_each(client: httpx.Client) -> None:
    body = {"prompt": "a cat", "size": "64x64", "n": 2, "stream": True, "model": "tiny-klein"}
    with client.stream("POST", "/v1/images/generations", json=body) as response:
        events = read_events(response)
    assert [e["type"] for e in events].count("image_generation.completed") == 2


def test_openai_client_streams_an_edit(base_url: str) -> None:
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    stream = sdk.images.edit(
        model="tiny-dev",
        image=("cat.png", png_bytes(64, 64), "image/png"),
        prompt="make it red",
        size="64x128",
        stream=True,
        partial_images=1,
        extra_body={"num_inference_steps": 4},
    )
    events = list(stream)
    types = [event.type for event in events]
    assert "image_edit.partial_image" in types and types[-1] == "image_edit.completed"
    assert decode_b64_image(events[-1].b64_json).size == (64, 128)


def test_stream_errors_before_the_first_event_keep_their_status(client: httpx.Client) -> None:
    response = client.post("/v1/images/generations", json={"prompt": "x", "stream": True, "model": "nope"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    response = client.post("/v1/images/generations", json={"prompt": "x", "partial_images": 2})
    assert response.status_code == 400 and response.json()["error"]["param"] == "partial_images"


def test_disconnected_stream_frees_the_engine_within_a_step(client: httpx.Client) -> None:
    slow = {"prompt": "a cat", "size": "512x512", "num_inference_steps": 20, "n": 4, "model": "tiny-klein", "seed": 1}
    full_ms = float(client.post("/v1/images/generations", json=slow).headers["x-generate-ms"])
    with client.stream("POST", "/v1/images/generations", json={**slow, "stream": True}) as response:
        for line in response.iter_lines():
            if line.startswith("data:") and json.loads(line[5:])["step"] == 2:
                break  # hang up after two steps
    time.sleep(0.2)
    follow_up = client.post("/v1/images/generations", json={"prompt": "a cat", "size": "64x64", "model": "tiny-klein"})
    assert follow_up.status_code == 200
    # Had the dead stream run to the end, the follow-up would have queued for most of its 20 steps.
    assert float(follow_up.headers["x-queue-ms"]) < full_ms / 2, (follow_up.headers["x-queue-ms"], full_ms)
