"""Shared fixtures: one real Ray Serve deployment of the tiny models, reached over real HTTP."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

TEST_LIMITS = {
    "max_body_bytes": 2 * 1024 * 1024,
    "max_reference_images": 4,
    "max_side": 512,
    "max_output_pixels": 512 * 512,
    "max_prompt_chars": 500,
    "max_steps": 20,
    "max_n": 4,
}
TEST_CONFIG = {
    "models": [
        {
            "name": "tiny-dev",
            "source": "tiny-dev",
            "warmup_shapes": [{"width": 64, "height": 64, "references": 1}],
            "default_size": [64, 64],
        },
        {
            "name": "tiny-klein",
            "source": "tiny-klein",
            "warmup_shapes": [{"width": 64, "height": 64, "references": 0}],
            "default_size": [64, 64],
        },
    ],
    "limits": TEST_LIMITS,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def png_bytes(width: int, height: int, seed: int = 0, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    channels = len(mode)
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(), mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_b64_image(b64: str) -> Image.Image:
    import base64

    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


@pytest.fixture(scope="session")
def base_url() -> Iterator[str]:
    import ray
    from ray import serve

    from deployments.app import build_app

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(TEST_CONFIG), name="flux2", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=120) as http:
        yield http
