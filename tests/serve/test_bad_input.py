"""Bad input: each answered with a 4xx in the OpenAI error shape; the service stays healthy."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers import TEST_LIMITS, decode_b64_image, png_bytes


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid PNG header that claims a huge image (a few hundred bytes on the wire)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width * 3 + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def rgba_png(width: int, height: int, transparent: bool) -> bytes:
    image = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    if transparent:
        image.paste((0, 0, 0, 0), (0, 0, width // 2, height))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def edit_files(*images: bytes, key: str = "image[]") -> list:
    return [(key, (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]


GOOD = png_bytes(64, 64)
Send = Callable[[httpx.Client], httpx.Response]


def post_edit(files: list, **fields: str) -> Send:
    return lambda c: c.post("/v1/images/edits", files=files, data={"prompt": "make it red", **fields})


def post_gen(body: object) -> Send:
    return lambda c: c.post("/v1/images/generations", json=body)


CASES: dict[str, tuple[Send, int, str | None]] = {
    "not an image": (post_edit(edit_files(b"hello, I am text")), 400, "image"),
    "empty file": (post_edit(edit_files(b"")), 400, "image"),
    "truncated png": (post_edit(edit_files(png_bytes(64, 64)[:200])), 400, "image"),
    "decompression bomb": (post_edit(edit_files(bomb_png())), 413, "image"),
    "no image": (
        lambda c: c.post("/v1/images/edits", data={"prompt": "x"}, files={"unrelated": ("a.txt", b"", "text/plain")}),
        400,
        "unrelated",
    ),
    "zero images": (lambda c: c.post("/v1/images/edits", files={"prompt": (None, "make it red")}), 400, "image"),
    "malformed multipart": (
        lambda c: c.post(
            "/v1/images/edits",
            content=b"--xyz\r\ngarbage",
            headers={"content-type": "multipart/form-data; boundary=xyz"},
        ),
        400,
        None,
    ),
    "too many images": (post_edit(edit_files(*[GOOD] * (TEST_LIMITS["max_reference_images"] + 1))), 400, "image"),
    "image under 64 px": (post_edit(edit_files(png_bytes(48, 64))), 400, "image"),
    "aspect over 8": (post_edit(edit_files(png_bytes(64, 640))), 400, "image"),
    "size not a multiple of 16": (post_edit(edit_files(GOOD), size="100x64"), 400, "size"),
    "size too large": (post_gen({"prompt": "a cat", "size": "2048x2048"}), 400, "size"),
    "size garbage": (post_gen({"prompt": "a cat", "size": "big"}), 400, "size"),
    "steps zero": (post_gen({"prompt": "a cat", "num_inference_steps": 0}), 400, "num_inference_steps"),
    "steps over max": (post_gen({"prompt": "a cat", "num_inference_steps": 999}), 400, "num_inference_steps"),
    "guidance negative": (post_gen({"prompt": "a cat", "guidance_scale": -1}), 400, "guidance_scale"),
    "guidance too high": (post_gen({"prompt": "a cat", "guidance_scale": 1000}), 400, "guidance_scale"),
    "n zero": (post_gen({"prompt": "a cat", "n": 0}), 400, "n"),
    "n too many": (post_gen({"prompt": "a cat", "n": 99}), 400, "n"),
    "n not a number": (post_edit(edit_files(GOOD), n="two"), 400, "n"),
    "empty prompt": (post_gen({"prompt": "   "}), 400, "prompt"),
    "missing prompt": (post_gen({"size": "64x64"}), 400, "prompt"),
    "over-long prompt": (post_gen({"prompt": "a" * (TEST_LIMITS["max_prompt_chars"] + 1)}), 400, "prompt"),
    "unknown model": (post_gen({"prompt": "a cat", "model": "dall-e-9"}), 404, "model"),
    "unknown output format": (post_gen({"prompt": "a cat", "output_format": "gif"}), 400, "output_format"),
    "compression out of range": (post_gen({"prompt": "a cat", "output_compression": 101}), 400, "output_compression"),
    "url response format": (post_gen({"prompt": "a cat", "response_format": "url"}), 400, "response_format"),
    "unknown parameter": (post_gen({"prompt": "a cat", "style": "vivid"}), 400, "style"),
    "seed negative": (post_gen({"prompt": "a cat", "seed": -5}), 400, "seed"),
    "json not an object": (post_gen(["a cat"]), 400, None),
    "invalid json": (
        lambda c: c.post("/v1/images/generations", content=b"{nope", headers={"content-type": "application/json"}),
        400,
        None,
    ),
    "body over the limit": (post_edit(edit_files(b"\0" * (TEST_LIMITS["max_body_bytes"] + 1))), 413, None),
    "generations as multipart": (lambda c: c.post("/v1/images/generations", data={"prompt": "a cat"}), 415, None),
    "edits as json": (lambda c: c.post("/v1/images/edits", json={"prompt": "a cat"}), 415, None),
    "mask of another size": (
        post_edit([*edit_files(GOOD), ("mask", ("m.png", rgba_png(80, 64, True), "image/png"))]),
        400,
        "mask",
    ),
    "mask without alpha": (
        post_edit([*edit_files(GOOD), ("mask", ("m.png", png_bytes(64, 64), "image/png"))]),
        400,
        "mask",
    ),
    "mask with nothing editable": (
        post_edit([*edit_files(GOOD), ("mask", ("m.png", rgba_png(64, 64, False), "image/png"))]),
        400,
        "mask",
    ),
    "duplicate field": (
        lambda c: c.post("/v1/images/edits", files=edit_files(GOOD), data={"prompt": ["a", "b"]}),
        400,
        "prompt",
    ),
    "wrong method": (lambda c: c.get("/v1/images/edits"), 405, None),
}


def assert_error_shape(response: httpx.Response, status: int, param: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"] and "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_4xx_and_service_stays_healthy(client: httpx.Client, case: str) -> None:
    send, status, param = CASES[case]
    assert_error_shape(send(client), status, param)
    good = client.post("/v1/images/generations", json={"prompt": "a cat", "size": "64x64", "model": "tiny-klein"})
    assert good.status_code == 200 and decode_b64_image(good.json()["data"][0]["b64_json"]).size == (64, 64)


def test_body_limit_enforced_without_content_length(client: httpx.Client) -> None:
    """A chunked upload has no Content-Length: the limit must hold while streaming."""

    def chunks():
        for _ in range(TEST_LIMITS["max_body_bytes"] // 65536 + 2):
            yield b"x" * 65536

    response = client.post("/v1/images/generations", content=chunks(), headers={"content-type": "application/json"})
    assert_error_shape(response, 413, None)


def test_mask_confines_the_edit_over_http(client: httpx.Client) -> None:
    files = [*edit_files(GOOD), ("mask", ("m.png", rgba_png(64, 64, True), "image/png"))]
    response = client.post("/v1/images/edits", files=files, data={"prompt": "make it red"})
    assert response.status_code == 200, response.text
    assert response.headers["x-mask-applied"] == "true"
    # rgba_png makes the left half transparent (editable): the right half must come back unchanged.
    source = np.asarray(Image.open(io.BytesIO(GOOD)).convert("RGB"))
    output = np.asarray(decode_b64_image(response.json()["data"][0]["b64_json"]))
    assert np.array_equal(output[:, 40:], source[:, 40:])
    assert not np.array_equal(output[:, :24], source[:, :24])
