"""The requests the suites send, made up: blocky random reference images, one request at a shape, and the pixels
of an image file that comes back."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from deployments.types import ImageRequest


def family_of_source(source: str) -> str:
    """The model family of a bench source (a hub id, a random-weight or a tiny one): FLUX.2-dev or klein."""
    return "dev" if source.endswith("dev") else "klein"


def reference_images(count: int, width: int, height: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """``count`` random images of 16x16-pixel blocks: small as PNG files, and different for each seed."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
        out.append(np.repeat(np.repeat(small, 16, axis=0), 16, axis=1))
    return tuple(out)


def make_request(width: int, height: int, refs: int, steps: int, seed: int = 0) -> ImageRequest:
    return ImageRequest(
        prompt="a photo of a red car in front of a house at sunset",
        width=width,
        height=height,
        images=reference_images(refs, width, height, seed),
        seed=seed,
        num_inference_steps=steps,
    )


def decode_rgb(data: bytes) -> np.ndarray:
    """An encoded image file -> (H, W, 3) uint8."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
