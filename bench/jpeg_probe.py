"""JPEG on the GPU (nvJPEG) vs in the ingress (Pillow), piece by piece, in one plain process.

For a 1024² noise image (what random weights produce) and a photo-like one (smooth shapes plus a
little grain), at quality 95: encode time (the GPU one includes the copy of the file to the host;
the CPU one starts from host pixels, after the 3 MB copy, timed separately), file size, PSNR to the
pixels, and the time the ingress then spends on that file (base64 + JSON: ``images_response``).

    python -m bench.jpeg_probe --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from bench.common import decode_rgb
from bench.eval.metrics import psnr
from deployments.openai.serving import ImageParams, images_response
from deployments.engine.pixels import encode_jpegs, host_pixels
from deployments.openai.images import encode_image
from deployments.types import EncodedImage, ImageResult


def median_ms(call: Callable[[], object], repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return round(statistics.median(times), 2)


def images(side: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).resize((side, side), Image.BICUBIC)
    grain = rng.normal(0, 3, (side, side, 3))
    return {
        "noise": rng.integers(0, 256, (side, side, 3), dtype=np.uint8),
        "photo-like": np.clip(np.asarray(smooth, dtype=np.float64) + grain, 0, 255).astype(np.uint8),
    }


def measure(pixels: np.ndarray, q: int, repeats: int) -> dict:
    on_gpu = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).contiguous().cuda()
    gpu_file = encode_jpegs(on_gpu, q)[0]
    cpu_file = encode_image(pixels, "jpeg", 100 - q)
    return {
        "pixels_to_host_ms": median_ms(lambda: host_pixels(on_gpu), repeats),
        "gpu_encode_ms": median_ms(lambda: encode_jpegs(on_gpu, q), repeats),
        "cpu_encode_ms": median_ms(lambda: encode_image(pixels, "jpeg", 100 - q), repeats),
        "gpu_bytes": len(gpu_file),
        "cpu_bytes": len(cpu_file),
        "gpu_psnr_db": round(psnr(pixels, decode_rgb(gpu_file)), 2),
        "cpu_psnr_db": round(psnr(pixels, decode_rgb(cpu_file)), 2),
        "gpu_b64_json_ms": median_ms(lambda: response(gpu_file, pixels), repeats),
        "cpu_b64_json_ms": median_ms(lambda: response(cpu_file, pixels), repeats),
    }


def response(file: bytes, pixels: np.ndarray) -> bytes:
    """The ingress's response body for one encoded file: base64 + JSON, nothing else."""
    height, width = pixels.shape[:2]
    result = ImageResult(
        [EncodedImage(file, "jpeg", width, height)],
        seed=0,
        num_inference_steps=4,
        guidance_scale=1.0,
        weights="random-full",
    )
    return images_response(result, ImageParams(prompt="x", output_format="jpeg"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--quality", type=int, default=95)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    q = args.quality
    figures: dict = {"size": args.size, "quality": q}
    for name, pixels in images(args.size).items():
        figures[name] = measure(pixels, q, args.repeats)
        print(name, figures[name], flush=True)
    with open(args.json, "w") as handle:
        json.dump(figures, handle, indent=1)


if __name__ == "__main__":
    main()
