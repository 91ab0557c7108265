"""Send the same edit to the context-parallel model and to the 1-GPU model of ``serve_cp.yaml``; compare.

    python -m bench.multi_gpu.serve_cp_check --url http://127.0.0.1:8000 --wait 900

Prints and writes ``$OUT/serve_cp_check.json``: HTTP latency and the engine's ``x-generate-ms`` for each
model (median of ``--n`` after one untimed request), and the max / mean absolute pixel difference.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

OUT = Path(os.environ.get("OUT", "bench-out"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--models", default="dev-cp2,dev-1gpu", help="context-parallel model first")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for /readyz")
    args = parser.parse_args()

    from bench.common import reference_images

    buffer = io.BytesIO()
    Image.fromarray(reference_images(1, args.size, args.size)[0]).save(buffer, format="PNG")
    reference = buffer.getvalue()
    report: dict = {"args": vars(args)}
    with httpx.Client(base_url=args.url, timeout=900) as http:
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            try:
                if http.get("/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(5)
        images = {}
        for model in args.models.split(","):
            totals, engine = [], []
            for i in range(args.n + 1):
                start = time.perf_counter()
                response = http.post(
                    "/v1/images/edits",
                    data={
                        "model": model,
                        "prompt": "make the car blue",
                        "size": f"{args.size}x{args.size}",
                        "seed": "7",
                        "num_inference_steps": str(args.steps),
                    },
                    files={"image": ("ref.png", reference, "image/png")},
                )
                response.raise_for_status()
                if i:
                    totals.append(time.perf_counter() - start)
                    engine.append(float(response.headers["x-generate-ms"]) / 1e3)
            data = base64.b64decode(response.json()["data"][0]["b64_json"])
            images[model] = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64)
            report[model] = {"http_s": statistics.median(totals), "generate_s": statistics.median(engine)}
    cp, single = args.models.split(",")[:2]
    diff = np.abs(images[cp] - images[single])
    report["latency_ratio"] = round(report[cp]["generate_s"] / report[single]["generate_s"], 3)
    report["pixel_diff"] = {"max": float(diff.max()), "mean": round(float(diff.mean()), 4)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "serve_cp_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
