"""The same requests through Ray Serve over real HTTP: latency vs the engine time the replica reports.

Serving overhead = client-side HTTP latency - ``x-generate-ms`` (the engine's own time for the
request, measured inside the replica); it covers the proxy, the ingress (parse, validate, decode
the references, PNG-encode the result), the handle call and the transfers.

    python -m bench.serve_bench --source <folder|random-klein-4b> --cache <dir> --json <out.json>
"""

from __future__ import annotations

import time

T_PROCESS = time.perf_counter()

import argparse  # noqa: E402
import base64  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def png(width: int, height: int, seed: int) -> bytes:
    from PIL import Image

    from bench.common import reference_images

    buffer = io.BytesIO()
    Image.fromarray(reference_images(1, width, height, seed)[0]).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--json", required=True)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--num-cpus", type=int, default=8)
    parser.add_argument("--gpu", type=int, default=1)
    parser.add_argument("--compile", default="regional")
    args = parser.parse_args()

    import httpx
    import numpy as np
    import ray
    from ray import serve

    from bench.common import summary
    from deployments.app import build_app

    side = args.size
    model = {
        "name": "bench",
        "source": args.source,
        "compile": args.compile,
        "compile_cache_dir": args.cache,
        "warmup_shapes": [
            {"width": side, "height": side, "references": 0},
            {"width": side, "height": side, "references": 1},
        ],
        "default_size": [side, side],
    }
    if not args.gpu:
        model["deployment_options"] = {"ray_actor_options": {"num_gpus": 0, "num_cpus": 0.5}}
    service = {
        "models": [model],
        "limits": {"max_side": 2048, "max_steps": 100},
        "ingress_options": {"max_ongoing_requests": 64},
    }
    result: dict = {"source": args.source, "steps": args.steps, "size": side}
    t0 = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, num_gpus=args.gpu, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    result["ray_start_s"] = round(time.perf_counter() - t0, 2)
    t1 = time.perf_counter()
    serve.run(build_app(service), name="flux2", route_prefix="/")
    result["serve_run_until_ready_s"] = round(time.perf_counter() - t1, 2)
    url = f"http://127.0.0.1:{port}"
    ref = png(side, side, 1)
    try:
        with httpx.Client(base_url=url, timeout=600) as http:

            def t2i(seed: int) -> httpx.Response:
                return http.post(
                    "/v1/images/generations",
                    json={
                        "model": "bench",
                        "prompt": "a photo of a red car in front of a house at sunset",
                        "size": f"{side}x{side}",
                        "seed": seed,
                        "num_inference_steps": args.steps,
                    },
                )

            def edit(seed: int) -> httpx.Response:
                return http.post(
                    "/v1/images/edits",
                    data={
                        "model": "bench",
                        "prompt": "make the car blue",
                        "size": f"{side}x{side}",
                        "seed": str(seed),
                        "num_inference_steps": str(args.steps),
                    },
                    files={"image": ("ref.png", ref, "image/png")},
                )

            for name, call in (("t2i", t2i), ("edit1", edit)):
                totals, engine, statuses = [], [], []
                for i in range(args.n + 1):
                    s = time.perf_counter()
                    response = call(i)
                    elapsed = time.perf_counter() - s
                    statuses.append(response.status_code)
                    if response.status_code != 200:
                        result[f"{name}:error"] = response.text[:500]
                        continue
                    body = response.json()
                    base64.b64decode(body["data"][0]["b64_json"])
                    if i == 0:
                        continue  # first request of a shape: excluded from the figures
                    totals.append(elapsed)
                    engine.append(float(response.headers["x-generate-ms"]) / 1e3)
                overhead = [t - e for t, e in zip(totals, engine, strict=True)]
                result[name] = {
                    "http_total_s": summary(totals),
                    "engine_generate_s": summary(engine),
                    "overhead_ms_p50": round(float(np.median(overhead)) * 1e3, 1) if overhead else None,
                    "overhead_ms_p95": round(float(np.percentile(overhead, 95)) * 1e3, 1) if overhead else None,
                    "overhead_fraction_p50": round(float(np.median(overhead)) / float(np.median(totals)), 4)
                    if overhead
                    else None,
                    "statuses": sorted(set(statuses)),
                }
                print(name, json.dumps(result[name]), flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
