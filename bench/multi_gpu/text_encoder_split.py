"""Disaggregated text encoder: what splitting the prompt encoder from the denoiser would save, on ONE GPU.

    OUT=<dir> python -m bench.multi_gpu.text_encoder_split --source random-dev --refs 1 --steps 50

Measures on one GPU, with the real pipeline (the same seed throughout):

- ``encode_s``: ``pipe.encode_prompt`` alone (512 tokens) -- the work a TextEncoder deployment would do;
- ``full_s``: a whole request with the encoder in the pipeline (today's replica);
- ``from_embeds_s``: the same request given ``prompt_embeds`` (a denoiser replica fed by an encoder),
  and whether its images equal ``full_s``'s (they must: same embeddings, same seed);
- peak VRAM of both, and resident VRAM with and without the encoder;
- the prompt embeddings' shape and bytes, and their round trip through Ray's object store on this node.

Then projects images/s per GPU: colocated (1 / full_s) vs one encoder GPU feeding M denoiser GPUs
(min(M / from_embeds_s, 1 / encode_s) / (M + 1)). Writes ``$OUT/text_encoder_split.json``.
CPU smoke run: ``OUT=/tmp/te python -m bench.multi_gpu.text_encoder_split --source tiny-dev --size 64 --steps 2``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

OUT = Path(os.environ.get("OUT", "bench-out"))
PROMPT = "a photo of a red car in front of a house at sunset"


def timed(fn, repeats: int) -> tuple[float, Any]:
    out = fn()  # first call: excluded (allocator, lazy init, compile)
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", default="random-dev")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--refs", type=int, default=1)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--n", type=int, default=2)
    parser.add_argument("--compile", default="auto")
    args = parser.parse_args()

    from PIL import Image

    from bench.common import gib, reference_images
    from deployments.config import ModelConfig
    from deployments.engine.load import load_pipeline
    from deployments.engine.optimize import apply_optimizations

    cuda = torch.cuda.is_available()
    config = ModelConfig(source=args.source, compile=args.compile)
    loaded = load_pipeline(config)
    apply_optimizations(loaded.pipeline, config, loaded.device)
    pipe, device = loaded.pipeline, loaded.device
    refs = [Image.fromarray(image) for image in reference_images(args.refs, args.size, args.size)] or None
    report: dict[str, Any] = {"args": vars(args), "device": str(device)}

    def run(**text: Any) -> np.ndarray:
        with torch.inference_mode():
            out = pipe(
                image=refs,
                height=args.size,
                width=args.size,
                num_inference_steps=args.steps,
                generator=torch.Generator("cpu").manual_seed(0),
                output_type="np",
                **text,
            )
        return out.images

    def encode() -> torch.Tensor:
        with torch.inference_mode():
            return pipe.encode_prompt(prompt=PROMPT, device=device)[0]

    report["encode_s"], embeds = timed(encode, max(3, args.n))
    report["prompt_embeds"] = {
        "shape": list(embeds.shape),
        "dtype": str(embeds.dtype),
        "bytes": embeds.numel() * embeds.element_size(),
    }
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    report["full_s"], full = timed(lambda: run(prompt=PROMPT), args.n)
    report["full_peak_gib"] = gib(torch.cuda.max_memory_allocated()) if cuda else None
    report["resident_with_encoder_gib"] = gib(torch.cuda.memory_allocated()) if cuda else None

    encoder = pipe.text_encoder
    encoder.to("cpu")  # a denoiser replica would not hold it at all
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    report["resident_without_encoder_gib"] = gib(torch.cuda.memory_allocated()) if cuda else None
    report["from_embeds_s"], split = timed(lambda: run(prompt_embeds=embeds), args.n)
    report["from_embeds_peak_gib"] = gib(torch.cuda.max_memory_allocated()) if cuda else None
    report["images_equal"] = bool(np.array_equal(full, split))
    report["images_max_abs_diff"] = float(np.abs(full - split).max())

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    payload = embeds.cpu()
    round_trips = []
    for _ in range(5):
        start = time.perf_counter()
        ray.get(ray.put(payload))
        round_trips.append(time.perf_counter() - start)
    report["object_store_round_trip_ms"] = round(statistics.median(round_trips) * 1e3, 2)
    ray.shutdown()

    colocated = 1 / report["full_s"]
    report["images_per_s_per_gpu"] = {"colocated": round(colocated, 5)}
    for m in (1, 3, 7, 15):
        served = min(m / report["from_embeds_s"], 1 / report["encode_s"])
        report["images_per_s_per_gpu"][f"1 encoder + {m} denoisers"] = round(served / (m + 1), 5)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "text_encoder_split.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
