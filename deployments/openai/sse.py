"""Streaming responses: the engine's events as server-sent events in the OpenAI Images streaming shape.

The payloads and their framing are built here together: one event a payload, named by its ``type``. A stream's
status is sent with its first event, so an error after that travels as an ``error`` event carrying the same
error object an answered error has.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from typing import Any

from starlette.responses import StreamingResponse

from deployments.errors import Flux2Error
from deployments.openai.errors import error_body
from deployments.openai.images import encode_image, to_b64
from deployments.openai.protocol import ImageParams
from deployments.openai.references import ReferenceCache
from deployments.openai.serving import image_file
from deployments.types import ImageResult, PartialImage, StepProgress, StreamEvent


def stream_payloads(
    event: StreamEvent, params: ImageParams, prefix: str, references: ReferenceCache
) -> list[dict[str, Any]]:
    """Server-sent event payloads for one engine event (``prefix``: image_generation or image_edit).

    ``.partial_image`` and ``.completed`` follow the OpenAI Images streaming events; ``.progress`` is
    this server's extension, as is ``generate_ms`` on ``.completed``. A request for n images ends with n
    ``.completed`` events.
    """
    created = int(time.time())
    common = {"created_at": created, "output_format": params.output_format, "background": "opaque", "quality": "auto"}
    if isinstance(event, StepProgress):
        return [
            {
                "type": f"{prefix}.progress",
                "step": event.step,
                "num_steps": event.num_steps,
                "elapsed_s": round(event.elapsed_s, 3),
            }
        ]
    if isinstance(event, PartialImage):
        height, width = event.image.shape[:2]
        b64 = to_b64(encode_image(event.image, params.output_format, params.output_compression))
        return [
            {
                "type": f"{prefix}.partial_image",
                "b64_json": b64,
                "partial_image_index": event.index,
                "size": f"{width}x{height}",
                **common,
            }
        ]
    return [
        {
            "type": f"{prefix}.completed",
            "b64_json": to_b64(file),
            "size": size,
            "generate_ms": round(event.timings.generate_s * 1000, 1),  # extension: as x-generate-ms
            **common,
        }
        for file, size in (image_file(image, params, references) for image in event.images)
    ]


def frame(payload: dict[str, Any]) -> str:
    """One server-sent event: named by the payload's type, its data the payload as one line of JSON."""
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n"


async def sse_events(
    events: AsyncGenerator[StreamEvent, None],
    params: ImageParams,
    prefix: str,
    references: ReferenceCache,
    on_result: Callable[[ImageResult], None],
) -> AsyncGenerator[str, None]:
    """The framed events up to the result (``on_result`` is told of it); an error raised on the way ends the
    stream with an ``error`` event. ``events`` is closed however the stream ends, a client gone included."""
    async with aclosing(events):
        try:
            async for event in events:
                # Encoding previews and results takes milliseconds: not on the event loop.
                for payload in await asyncio.to_thread(stream_payloads, event, params, prefix, references):
                    yield frame(payload)
                if isinstance(event, ImageResult):
                    on_result(event)
                    return
        except Flux2Error as err:
            yield frame({"type": "error", "error": error_body(err).model_dump(mode="json")})


def event_stream(
    events: AsyncGenerator[StreamEvent, None],
    params: ImageParams,
    prefix: str,
    headers: Mapping[str, str],
    references: ReferenceCache,
    on_result: Callable[[ImageResult], None],
) -> StreamingResponse:
    """The streaming response of ``events`` (``prefix``: image_generation or image_edit)."""
    body = sse_events(events, params, prefix, references, on_result)
    return StreamingResponse(body, media_type="text/event-stream", headers={**headers, "cache-control": "no-store"})
