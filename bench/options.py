"""Every speed option beside its deviation: latency and speed-up against a baseline engine, and how far
the images move (relative L2, cosine) on the same request and seed.

    python -m bench options --source random-dev --steps 50 --size 1024 \\
        --variant compile=regional --variant compile=regional,quantization=fp8 \\
        --variant 'compile=regional,step_cache=taylorseer,step_cache_options={"cache_interval": 4}' \\
        --json out.json

The baseline is ``--baseline`` (default ``compile=none``: the diffusers pipeline call as is, eager bf16).
Variant values are JSON where they parse as JSON, else strings; keys are ModelConfig fields. One engine at
a time is loaded, warmed up on the request's shape, and times ``--repeats`` requests, each split into
stages with CUDA events (text encoder, transformer calls, VAE encode and decode; "other" is the rest).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from bench.cli import parse_overrides, suite_parser
from deployments.config import ModelConfig, Shape
from deployments.types import ImageRequest


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
    from bench.common import StageTimer, free_cuda, sync
    from deployments.engine import Flux2Engine, warm_up

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
    free_cuda()
    return image, times, {key: round(statistics.median(s[key] for s in stages), 2) for key in stages[0]}


def build_parser() -> argparse.ArgumentParser:
    parser = suite_parser("options", __doc__)
    parser.add_argument("--source", required=True, help="random-klein-4b | random-klein-9b | random-dev | a folder")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--references", type=int, default=0)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", default="compile=none", help="ModelConfig overrides, key=value,...")
    parser.add_argument("--variant", action="append", default=[], help="ModelConfig overrides, repeatable")
    parser.add_argument("--json", required=True)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

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
