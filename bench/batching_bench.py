"""Throughput with and without batching: klein text-to-image, compiled engine, one process.

    python -m bench.batching_bench --source random-klein-4b --size 512 --json out.json

Unbatched: requests one at a time. Batched: ``Flux2Engine.generate_batch`` on groups of
``--batch`` requests (what the model deployment does when ``max_batch_size`` > 1).
"""

from __future__ import annotations

import argparse
import json
import time

from bench.common import sync
from deployments.config import ModelConfig, Shape
from deployments.engine import Flux2Engine, warm_up
from deployments.types import ImageRequest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", default="random-klein-4b")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    shape = Shape(width=args.size, height=args.size, references=0)
    engine = Flux2Engine.from_config(ModelConfig(source=args.source, warmup_shapes=(shape,)))
    warm_up(engine)
    requests = [
        ImageRequest(
            prompt=f"a photo of a red car {i}",
            width=args.size,
            height=args.size,
            seed=i,
            num_inference_steps=args.steps,
        )
        for i in range(args.batch * args.rounds)
    ]
    engine.generate_batch(requests[: args.batch])  # compile the batched shape once
    engine.generate_batch(requests[: args.batch])
    figures = {"source": args.source, "size": args.size, "steps": args.steps, "batch": args.batch}
    for name, groups in (
        ("unbatched", [[r] for r in requests]),
        ("batched", [requests[i : i + args.batch] for i in range(0, len(requests), args.batch)]),
    ):
        sync()
        start = time.perf_counter()
        for group in groups:
            engine.generate_batch(group)
        sync()
        elapsed = time.perf_counter() - start
        figures[f"{name}_images_per_s"] = round(len(requests) / elapsed, 3)
    figures["speedup"] = round(figures["batched_images_per_s"] / figures["unbatched_images_per_s"], 3)
    print(json.dumps(figures))
    with open(args.json, "w") as handle:
        json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
