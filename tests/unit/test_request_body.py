"""deployments/request_body.py: a body read within its size limit and its deadline, from a stream of chunks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from deployments.config import Limits
from deployments.errors import BodyTimeout, TooLarge, UnsupportedMediaType
from deployments.request_body import read_body, require_content_type


class Upload:
    """A client's body as the server receives it: chunks, each after a pause; counts what was taken."""

    def __init__(self, *chunks: tuple[float, bytes]) -> None:
        self.chunks = chunks
        self.taken = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for pause_s, chunk in self.chunks:
            await asyncio.sleep(pause_s)
            self.taken += 1
            yield chunk


def read(upload: Upload, content_length: str | None, limits: Limits) -> bytes:
    return asyncio.run(read_body(aiter(upload), content_length, limits))


def test_the_chunks_make_the_body() -> None:
    upload = Upload((0, b"ab"), (0, b""), (0, b"cd"))
    assert read(upload, "4", Limits(max_body_bytes=4)) == b"abcd"
    assert read(Upload(), None, Limits()) == b""


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    upload = Upload((0, b"x" * 10))
    with pytest.raises(TooLarge) as err:
        read(upload, "11", Limits(max_body_bytes=10))
    assert err.value.code == "request_too_large" and upload.taken == 0


def test_an_undeclared_body_is_refused_at_the_chunk_that_crosses_the_limit() -> None:
    upload = Upload((0, b"x" * 6), (0, b"x" * 6), (0, b"x" * 6))
    with pytest.raises(TooLarge) as err:
        read(upload, None, Limits(max_body_bytes=10))
    assert err.value.code == "request_too_large" and upload.taken == 2


def test_a_stalled_body_misses_its_deadline() -> None:
    limits = Limits(body_timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(BodyTimeout) as err:
        read(Upload((0, b"{"), (30, b"}")), "2", limits)
    assert 0.2 <= time.monotonic() - started < 5
    assert err.value.code == "body_timeout" and "(1 bytes received)" in err.value.message


def test_the_deadline_grows_with_the_declared_length_or_else_with_what_arrived() -> None:
    """A second per ``min_body_bytes_per_s``: of the declared length up front, of the bytes so far without one."""
    limits = Limits(body_timeout_s=0.2, min_body_bytes_per_s=1000)
    body = b"x" * 1000
    assert read(Upload((0.3, body)), str(len(body)), limits) == body  # 0.2 s + 1 s allowed
    with pytest.raises(BodyTimeout):
        read(Upload((0.3, body)), None, limits)  # nothing arrived yet: 0.2 s


@pytest.mark.parametrize("header", ["application/json", "Application/JSON; charset=utf-8", " application/json ;x=1"])
def test_the_media_type_is_compared_without_its_parameters(header: str) -> None:
    require_content_type(header, "application/json")


@pytest.mark.parametrize(("header", "named"), [(None, "none"), ("", "none"), ("multipart/form-data; b=1", "multipart")])
def test_another_media_type_is_refused_and_named(header: str | None, named: str) -> None:
    with pytest.raises(UnsupportedMediaType) as err:
        require_content_type(header, "application/json")
    assert err.value.code == "unsupported_media_type" and f"got {named}" in err.value.message
