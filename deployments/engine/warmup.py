"""Warm-up: run every configured shape bucket once so no user request pays for compilation."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from deployments.config import Shape
from deployments.engine.generate import Flux2Engine
from deployments.protocol import ImageRequest

logger = logging.getLogger(__name__)

WARMUP_STEPS = 2  # step count does not change tensor shapes; two steps also cover the scheduler's loop


def warmup_request(shape: Shape, seed: int = 0) -> ImageRequest:
    """A synthetic request of the bucket's shape: references are smooth random images of the output size."""
    rng = np.random.default_rng(seed)
    refs = tuple(
        np.repeat(
            np.repeat(rng.integers(0, 256, (shape.height // 16, shape.width // 16, 3), dtype=np.uint8), 16, axis=0),
            16,
            axis=1,
        )
        for _ in range(shape.references)
    )
    return ImageRequest(
        prompt="warm-up: a photo of a red car",
        width=shape.width,
        height=shape.height,
        images=refs,
        seed=seed,
        num_inference_steps=WARMUP_STEPS,
    )


def warm_up(engine: Flux2Engine, shapes: tuple[Shape, ...] | None = None) -> dict[str, float]:
    """Run each shape twice (compile, then a steady-state run) and record the times."""
    shapes = engine.config.warmup_shapes if shapes is None else shapes
    times: dict[str, float] = {}
    start = time.perf_counter()
    for shape in shapes:
        key = f"{shape.width}x{shape.height}+{shape.references}ref"
        request = warmup_request(shape)
        engine.warm_shapes.add(request.shape_key)
        for attempt in ("first", "second"):
            t0 = time.perf_counter()
            engine.generate(request)
            times[f"{key}:{attempt}"] = time.perf_counter() - t0
        logger.info("warmed %s: first %.2fs, second %.2fs", key, times[f"{key}:first"], times[f"{key}:second"])
    if shapes and engine.pipeline.vae.decoder._compiled_call_impl is not None:
        t0 = time.perf_counter()
        warm_vae_for_other_sizes(engine, shapes)
        times["vae:other_sizes"] = time.perf_counter() - t0
    engine.warmup_s = time.perf_counter() - start
    return times


def warm_vae_for_other_sizes(engine: Flux2Engine, shapes: tuple[Shape, ...]) -> None:
    """Give the compiled VAE a graph for every size, not only the buckets' sizes.

    The buckets get static graphs (the fastest: klein's 1024² decode 37 ms, 47 ms with a dynamic graph).
    One decode (and, if any bucket has references, one encode) at a size that differs from the first
    bucket in both height and width makes torch.compile build a dynamic graph now, so a user's first
    request at another size (or with another reference size) does not wait for the VAE to recompile
    (89 s for dev's first 1344x768 edit on an H200 without this).
    """
    vae = engine.pipeline.vae
    width, height = shapes[0].width + 64, shapes[0].height + 32
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    with torch.inference_mode():
        latents = torch.randn(1, vae.config.latent_channels, height // factor, width // factor)
        vae.decode(latents.to(vae.device, vae.dtype), return_dict=False)
        if any(shape.references for shape in shapes):
            vae.encode(torch.rand(1, 3, height, width).to(vae.device, vae.dtype) * 2 - 1)
