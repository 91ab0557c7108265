"""Warm-up: run every configured shape bucket once so no user request pays for compilation."""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
from torch._dynamo.utils import calculate_time_spent

from deployments.config import Shape
from deployments.engine.flux2_engine import Flux2Engine
from deployments.engine.vae import warm_general_decode
from deployments.types import ImageRequest

logger = logging.getLogger(__name__)

WARMUP_STEPS = 2  # step count does not change tensor shapes; two steps also cover the scheduler's loop
# A second batch size makes dynamo recompile the batch dimension as dynamic, so no n a request asks for compiles
# again; warmed at n = 1 only, the first request for n > 1 compiled (90 s of waiting on an H200 in the soak).
WARMUP_BATCH = 2
# Where warm-up's compile time went (torch's own counters, seconds): all of it (dynamo's tracing included), the
# backend's part, inductor's part. With a warm compile cache, what remains of the first is mostly tracing.
COMPILE_PHASES = ("entire_frame_compile", "backend_compile", "inductor_compile")


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
    """Run each shape twice (compile, then a steady-state run), then with ``WARMUP_BATCH`` images, and record the
    times.

    The second run asks for JPEG, so an engine that encodes on the GPU has its encoder set up too. A model with
    LoRA adapters runs each shape once and at ``WARMUP_BATCH`` more with its adapter slots on, so no adapter
    request compiles. An engine that compiles nothing runs each shape once (and once with its slots on): a second
    run or another batch size would prepare nothing (the CPU demo's warm-up: 10.2 s before, at 1024²). The times
    include torch's own count of the compile time they held (``compile:*``).
    """
    shapes = engine.config.warmup_shapes if shapes is None else shapes
    compiled = engine.compiles_anything
    times: dict[str, float] = {}
    compiled_before = calculate_time_spent()
    start = time.perf_counter()
    for shape in shapes:
        key = f"{shape.width}x{shape.height}+{shape.references}ref"
        request = warmup_request(shape)
        engine.warm_shapes.add(request.shape_key)
        runs = [("first", request)]
        if compiled or engine.config.device_jpeg:
            runs.append(("second", dataclasses.replace(request, jpeg_quality=95)))
        if compiled:
            runs.append(("batch", dataclasses.replace(request, n=WARMUP_BATCH)))
        for attempt, run in runs:
            t0 = time.perf_counter()
            engine.generate(run)
            times[f"{key}:{attempt}"] = time.perf_counter() - t0
        if engine.config.lora.adapters:  # the LoRA slots' graphs, which adapter requests run (empty: base output)
            for attempt, n in (("adapters", 1), ("adapters-batch", WARMUP_BATCH))[: 2 if compiled else 1]:
                t0 = time.perf_counter()
                with engine.adapters.warming():
                    engine.generate(dataclasses.replace(request, n=n))
                times[f"{key}:{attempt}"] = time.perf_counter() - t0
        logger.info("warmed %s: %s", key, ", ".join(f"{name} {times[f'{key}:{name}']:.2f}s" for name, _ in runs))
    t0 = time.perf_counter()
    warm_general_decode(engine.pipeline.vae)
    times["general-decode"] = time.perf_counter() - t0
    engine.warmup_s = time.perf_counter() - start
    compiled = calculate_time_spent()
    for phase in COMPILE_PHASES:
        times[f"compile:{phase}"] = compiled.get(phase, 0.0) - compiled_before.get(phase, 0.0)
    return times
