"""deployments/openai/sse.py: engine events as OpenAI Images server-sent events, framed, to the end or an error."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncGenerator

import numpy as np

from deployments.errors import GenerationFailed, InvalidRequest
from deployments.openai.images import encode_image
from deployments.openai.protocol import ImageParams
from deployments.openai.references import ReferenceCache
from deployments.openai.sse import event_stream, frame, sse_events, stream_payloads
from deployments.types import EncodedImage, ImageResult, PartialImage, StepProgress, StreamEvent, Timings
from tests.helpers import decode_b64_image

PARAMS = ImageParams(prompt="p", stream=True, partial_images=1)


def pixels(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def result(n: int = 1) -> ImageResult:
    images = [pixels(32, 48, i) for i in range(n)]
    return ImageResult(
        images, seed=1, num_inference_steps=2, guidance_scale=1.0, weights="x", timings=Timings(generate_s=2.0)
    )


class Source:
    """A replica's stream of events: ``fail`` raises after them; ``closed`` tells whether it was closed."""

    def __init__(self, *events: StreamEvent, fail: Exception | None = None) -> None:
        self.events, self.fail, self.closed = events, fail, False

    async def __call__(self) -> AsyncGenerator[StreamEvent, None]:
        try:
            for event in self.events:
                yield event
            if self.fail:
                raise self.fail
            await asyncio.sleep(30)  # a replica never ends a stream without its result
        finally:
            self.closed = True


def parse(frames: list[str]) -> list[dict]:
    """Each frame back into its payload, checking the frame's shape on the way."""
    payloads = []
    for text in frames:
        name, data, blank = text.split("\n", 2)
        assert name.startswith("event: ") and data.startswith("data: ") and blank == "\n"
        payloads.append(json.loads(data.removeprefix("data: ")))
        assert payloads[-1]["type"] == name.removeprefix("event: ")
    return payloads


def stream(source: Source, limit: int | None = None) -> tuple[list[dict], list[ImageResult]]:
    """The payloads a client receives (the first ``limit`` only, when it leaves early) and the results counted."""
    counted: list[ImageResult] = []

    async def run() -> list[str]:
        frames = []
        body = sse_events(source(), PARAMS, "image_edit", ReferenceCache(0), counted.append)
        async for text in body:
            frames.append(text)
            if len(frames) == limit:
                await body.aclose()  # what Starlette does to the body of a client that left
                assert source.closed  # at once, not when the loop collects it: the run stops now
                break
        return frames

    return parse(asyncio.run(run())), counted


def test_a_frame_is_one_named_event_with_one_line_of_json() -> None:
    text = frame({"type": "image_edit.progress", "note": "two\nlines"})
    assert text == 'event: image_edit.progress\ndata: {"type": "image_edit.progress", "note": "two\\nlines"}\n\n'


def test_progress_previews_and_one_completed_event_an_image() -> None:
    preview = pixels(32, 48)
    done = result(n=2)
    source = Source(StepProgress(1, 2, 0.1234), PartialImage(0, preview), StepProgress(2, 2, 0.2), done)
    payloads, counted = stream(source)
    kinds = [payload["type"].removeprefix("image_edit.") for payload in payloads]
    assert kinds == ["progress", "partial_image", "progress", "completed", "completed"]
    assert payloads[0] == {"type": "image_edit.progress", "step": 1, "num_steps": 2, "elapsed_s": 0.123}
    assert payloads[1]["partial_image_index"] == 0 and payloads[1]["size"] == "48x32"
    assert np.array_equal(np.asarray(decode_b64_image(payloads[1]["b64_json"])), preview)
    for payload, image in zip(payloads[3:], done.images, strict=True):
        assert payload["generate_ms"] == 2000.0 and payload["size"] == "48x32"
        assert np.array_equal(np.asarray(decode_b64_image(payload["b64_json"])), image)
    assert counted == [done] and source.closed


def test_an_error_after_the_first_event_ends_the_stream_as_an_error_event() -> None:
    failure = GenerationFailed("the model failed to generate the image", code="generation_failed")
    source = Source(StepProgress(1, 4, 0.1), fail=failure)
    payloads, counted = stream(source)
    assert payloads[-1] == {
        "type": "error",
        "error": {"message": failure.message, "type": "server_error", "param": None, "code": "generation_failed"},
    }
    assert counted == [] and source.closed


def test_a_client_that_leaves_closes_the_replicas_stream() -> None:
    source = Source(StepProgress(1, 4, 0.1), StepProgress(2, 4, 0.2))
    payloads, counted = stream(source, limit=1)
    assert len(payloads) == 1 and counted == [] and source.closed


def test_files_encoded_on_the_gpu_pass_through_the_completed_event() -> None:
    jpeg = encode_image(pixels(32, 48), "jpeg", None)
    done = ImageResult(
        [EncodedImage(jpeg, "jpeg", 48, 32)], seed=1, num_inference_steps=4, guidance_scale=1.0, weights="x"
    )
    (completed,) = stream_payloads(
        done, ImageParams(prompt="p", output_format="jpeg"), "image_generation", ReferenceCache(0)
    )
    assert base64.b64decode(completed["b64_json"]) == jpeg and completed["size"] == "48x32"
    assert completed["type"] == "image_generation.completed" and completed["output_format"] == "jpeg"


def test_the_response_is_an_uncached_event_stream_with_the_routes_headers() -> None:
    response = event_stream(Source()(), PARAMS, "image_edit", {"x-seed": "7"}, ReferenceCache(0), lambda _: None)
    assert response.media_type == "text/event-stream"
    assert response.headers["x-seed"] == "7" and response.headers["cache-control"] == "no-store"


def test_a_client_error_keeps_its_type_in_the_error_event() -> None:
    payloads, _ = stream(Source(fail=InvalidRequest("bad", param="size", code="invalid_value")))
    error = {"message": "bad", "type": "invalid_request_error", "param": "size", "code": "invalid_value"}
    assert payloads == [{"type": "error", "error": error}]
