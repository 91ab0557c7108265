"""Every speed option beside its deviation: latency and speed-up against a baseline engine, and how far
the images move (relative L2, cosine) on the same request and seed.

    python -m bench.speed_options --source random-dev --steps 50 --size 1024 \\
        --variant compile=regional --variant compile=regional,quantization=fp8 \\
        --variant 'compile=regional,step_cache=taylorseer,step_cache_options={"cache_interval": 4}' \\
        --json out.json

The baseline is ``--baseline`` (default ``compile=none``: plain eager bf16). Variant values are JSON where
they parse as JSON, else strings; keys are ModelConfig fields. One engine at a time is loaded.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from typing import Any

import numpy as np
import torch

from bench.common import StageTimer, sync
from deployments.config import ModelConfig, Shape
from deployments.engine import Flux2Engine, warm_up
from deployments.types import ImageRequest


def parse_overrides(text: str) -> dict[str, Any]:
    """``a=1,b=fp8,c={"x": 1, "y": 2}`` -> dict; commas inside JSON values are kept."""
    overrides: dict[str, Any] = {}
    for part in split_top_level(text):
        key, _, raw = part.partition("=")
        try:
            overrides[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key.strip()] = raw
    return overrides


def split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [part for part in [*parts, current] if part.strip()]


def deviation(image: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    x = image.astype(np.float64).ravel() - 127.5
    y = reference.astype(np.float64).ravel() - 127.5
    return {
        "rel_l2": float(np.linalg.norm(x - y) / np.linalg.norm(y)),
        "cosine": float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))),
    }


def measure(
    config: ModelConfig, request: ImageRequest, repeats: int
) -> tuple[np.ndarray, list[float], dict[str, float]]:
    """Load, warm up on the request's shape, then time ``repeats`` runs.

    Returns the image, the end-to-end times and the median milliseconds of each pipeline stage
    ("other" = the rest: latents, scheduler, reference preprocessing, uint8 conversion, Python).
    """
    engine = Flux2Engine.from_config(config)
    warm_up(engine)
    timer = StageTimer(engine.pipeline)
    times, image, stages = [], None, []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        image = engine.generate(request).images[0]
        sync()
        times.append(time.perf_counter() - start)
        stage_ms = timer.take_ms()
        stages.append({**stage_ms, "other": times[-1] * 1e3 - sum(stage_ms.values())})
    timer.remove()
    del engine, timer  # the timer holds the transformer: keep nothing alive into the next variant
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return image, times, {key: round(statistics.median(s[key] for s in stages), 2) for key in stages[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--references", type=int, default=0)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", default="compile=none")
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--json", required=True)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    references = tuple(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8) for _ in range(args.references))
    request = ImageRequest(
        prompt="a photo of a red car in front of a house",
        width=args.size,
        height=args.size,
        images=references,
        seed=0,
        num_inference_steps=args.steps,
    )
    shape = Shape(width=args.size, height=args.size, references=args.references)
    rows = []
    baseline_image, baseline_times = None, None
    for label in [args.baseline, *args.variant]:
        config = ModelConfig(source=args.source, warmup_shapes=(shape,), **parse_overrides(label))
        image, times, stage_ms = measure(config, request, args.repeats)
        p50 = statistics.median(times)
        if baseline_image is None:
            baseline_image, baseline_times = image, times
        row = {
            "variant": label,
            "p50_s": round(p50, 4),
            "speedup": round(statistics.median(baseline_times) / p50, 3),
            **{key: round(value, 6) for key, value in deviation(image, baseline_image).items()},
            "stage_ms_p50": stage_ms,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"source": args.source, "size": args.size, "steps": args.steps, "references": args.references}
    with open(args.json, "w") as handle:
        json.dump({**result, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
