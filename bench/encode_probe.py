"""Why does the ingress encode slower than a plain process? Times the ingress's response work for a 1024²
noise image (encode_image, then base64 + JSON) with wall and thread-CPU clocks in three places: this
process, a plain Ray actor, and an async Ray actor calling it through ``asyncio.to_thread`` (as the
ingress does). The argument is a Ray-serialized array, as the ingress gets it from the model replica.

    python -m bench.encode_probe
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import numpy as np
import ray

from deployments.openai.serving import images_response

FORMATS = ("png", "jpeg")


def probe(pixels: np.ndarray, repeats: int = 7) -> dict:
    """Median wall / CPU milliseconds of encode + base64 + JSON per output format."""
    from deployments.openai.serving import ImageParams
    from deployments.types import ImageResult

    result = ImageResult(images=[pixels], seed=0, num_inference_steps=4, guidance_scale=1.0, weights="random-full")
    import os

    from deployments.openai.images import _DEFLATE_THREADS

    out: dict = {"cpus_usable": len(os.sched_getaffinity(0)), "deflate_threads": _DEFLATE_THREADS}
    for output_format in FORMATS:
        params = ImageParams(prompt="x", output_format=output_format)
        walls, cpus = [], []
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.thread_time()
            images_response(result, params)
            walls.append((time.perf_counter() - wall) * 1e3)
            cpus.append((time.thread_time() - cpu) * 1e3)
        out[output_format] = {
            "wall_ms": round(statistics.median(walls), 1),
            "cpu_ms": round(statistics.median(cpus), 1),
        }
    return out


@ray.remote
class PlainActor:
    def run(self, pixels: np.ndarray) -> dict:
        return probe(pixels)


@ray.remote
class AsyncActor:
    async def run(self, pixels: np.ndarray) -> dict:
        return await asyncio.to_thread(probe, pixels)


def main() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    rows = {"this process": probe(pixels)}
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    try:
        ref = ray.put(pixels)
        rows["ray actor"] = ray.get(PlainActor.remote().run.remote(ref))
        rows["async ray actor, to_thread"] = ray.get(AsyncActor.remote().run.remote(ref))
    finally:
        ray.shutdown()
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
