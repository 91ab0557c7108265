"""The requests the suites send, made up: blocky random reference images and one request at a shape; the plain
diffusers call that runs such a request as a diffusers user would (the baseline); the pixels of an image file that
comes back."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from deployments.types import ImageRequest

# Engine options under which a repeated request times as a new one: the prompt and latent caches off. The suites
# that repeat one request to time a rung use them unless told otherwise.
UNCACHED = {"prompt_cache_mb": 0, "latent_cache_mb": 0}


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


def run_plain(pipeline: Any, request: ImageRequest, steps: int, guidance: float, output_type: str = "np") -> Any:
    """What a user of plain diffusers writes: the pipeline call, at the engine's settings."""
    import torch

    references = [Image.fromarray(image) for image in request.images] or None
    generator = [torch.Generator("cpu").manual_seed(request.seed)]
    with torch.inference_mode():
        output = pipeline(
            image=references,
            prompt=request.prompt,
            height=request.height,
            width=request.width,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator,
            output_type=output_type,
        )
    if output_type in ("latent", "pil"):
        return output.images
    return np.clip(np.rint(output.images * 255.0), 0, 255).astype(np.uint8)


def decode_rgb(data: bytes) -> np.ndarray:
    """An encoded image file -> (H, W, 3) uint8."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
