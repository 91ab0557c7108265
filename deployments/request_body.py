"""Reading a request body, bounded in size and in time, before anything parses it.

Serve has no body limit and no deadline for the body alone: without these, a client that sends its headers and
then stalls holds an ingress slot as long as it likes, and a large body is buffered whole before it is refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from deployments.config import Limits
from deployments.errors import BodyTimeout, TooLarge, UnsupportedMediaType


def require_content_type(content_type: str | None, expected: str) -> None:
    """Refuse a body of another media type before reading it (parameters such as ``boundary`` aside)."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != expected:
        raise UnsupportedMediaType(
            f"Content-Type must be {expected}, got {media_type or 'none'}", code="unsupported_media_type"
        )


async def read_body(chunks: AsyncIterator[bytes], content_length: str | None, limits: Limits) -> bytes:
    """The body, refused as soon as it exceeds ``limits.max_body_bytes`` or misses its deadline: ``body_timeout_s``
    plus a second per ``min_body_bytes_per_s`` of it (of what has arrived, when no Content-Length says). A client
    that sends headers and then stalls holds its slot that long at most."""
    limit = limits.max_body_bytes
    expected = int(content_length) if content_length and content_length.isdigit() else None
    if expected is not None and expected > limit:
        raise TooLarge(f"request body is {content_length} bytes; the limit is {limit}", code="request_too_large")
    started = time.monotonic()
    received, size = [], 0
    while True:
        allowed = limits.body_timeout_s + (expected if expected is not None else size) / limits.min_body_bytes_per_s
        try:
            chunk = await asyncio.wait_for(anext(chunks), max(0.0, started + allowed - time.monotonic()))
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise BodyTimeout(
                f"the request body did not arrive within {allowed:.1f}s ({size} bytes received)", code="body_timeout"
            ) from None
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body exceeds the limit of {limit} bytes", code="request_too_large")
        received.append(chunk)
    return b"".join(received)
