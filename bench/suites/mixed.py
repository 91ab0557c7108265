"""Mixed back-to-back requests: sizes and reference counts drawn at random, some outside the warm-up buckets,
on one warmed engine. Counts OOMs (and the engine's OOM recoveries), other errors, shapes compiled on first
use, the GPU's idle fraction (NVML every 50 ms) and the latency per shape.

    python -m bench mixed --source random-klein-4b --requests 200 --steps 4 --budget 580 --json out.json

Requests stop at ``--requests``, or before one that would not finish within ``--budget`` (seconds since
start, warm-up included) at the slowest latency seen so far.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import traceback
from pathlib import Path

from bench.lib.cli import parse_shapes, suite_parser
from bench.lib.device import GpuUtilSampler
from bench.lib.requests import make_request
from bench.lib.results import Deadline, log
from bench.lib.timing import summary

MIXED_SHAPES = "1024x1024+0,1024x1024+1,768x1344+0,1344x768+1,512x512+0,1024x1024+2"


def build_parser() -> argparse.ArgumentParser:
    parser = suite_parser("mixed", __doc__)
    parser.add_argument("--source", required=True)
    parser.add_argument("--json", required=True)
    parser.add_argument("--requests", type=int, default=200, help="at most")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--budget", type=float, default=540.0, help="seconds this command may take")
    parser.add_argument("--shapes", type=parse_shapes, default=MIXED_SHAPES, help="drawn from, WxH+R,...")
    parser.add_argument("--warmup", type=parse_shapes, default="1024x1024+0,1024x1024+1", help="buckets, WxH+R,...")
    parser.add_argument("--cache", default=None, help="compile cache folder (default: the engine's)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    import torch

    from deployments.config import ModelConfig, Shape
    from deployments.engine import Flux2Engine, warm_up
    from deployments.errors import Overloaded

    deadline = Deadline(args.budget)
    warmup = tuple(Shape(width=w, height=h, references=r) for w, h, r in args.warmup)
    config = ModelConfig(source=args.source, warmup_shapes=warmup, compile_cache_dir=args.cache)
    engine = Flux2Engine.from_config(config)
    warmup_s = warm_up(engine)
    log(f"warmed up in {engine.warmup_s:.1f}s; {deadline.left():.0f}s left for the mixed requests")
    rng = random.Random(0)
    ooms = errors = done = 0
    peak = slowest = 0.0
    by_shape: dict[str, list[float]] = {}
    sampler = GpuUtilSampler()
    start = time.perf_counter()
    with sampler:
        for i in range(args.requests):
            if not deadline.allows(slowest):
                break
            width, height, refs = rng.choice(args.shapes)
            request_start = time.perf_counter()
            try:
                result = engine.generate(make_request(width, height, refs, args.steps, seed=i))
                peak = max(peak, result.timings.peak_vram_gb)
            except (Overloaded, torch.OutOfMemoryError):
                ooms += 1
            except Exception:
                errors += 1
                traceback.print_exc()
            done += 1
            latency = time.perf_counter() - request_start
            slowest = max(slowest, latency)
            by_shape.setdefault(f"{width}x{height}+{refs}", []).append(latency)
    wall = time.perf_counter() - start
    result = {
        "source": args.source,
        "warmup_detail_s": {key: round(value, 3) for key, value in warmup_s.items()},
        "requests": done,
        "requested": args.requests,
        "steps": args.steps,
        "ooms": ooms,
        "oom_recoveries": engine.memory.oom_recoveries,
        "other_errors": errors,
        "unwarmed_shape_compiles": engine.unwarmed_compiles,
        "wall_s": round(wall, 1),
        "images_per_s": round(done / wall, 3) if wall else None,
        "peak_vram_gib_max": round(peak, 2),
        "gpu_util": sampler.result(),
        "latency_s_by_shape": {key: summary(values) for key, values in sorted(by_shape.items())},
    }
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result), flush=True)
