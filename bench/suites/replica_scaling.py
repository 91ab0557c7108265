"""Replica scaling on one host: images/s at saturation with 1..N one-GPU replicas, p95 at 80% load, autoscaling.

    python -m bench replica-scaling --source random-klein-4b --gpus 8 --replicas 1,2,4,8 --json out.json

1. For each replica count r (``num_replicas: r``, ``num_gpus: 1`` each): closed loop with 2·r clients for
   ``--duration`` s over HTTP -> images/s; efficiency(r) = ips(r) / (r · ips(1)) (issue 8's target: >= 0.9).
2. At the largest r: open loop, Poisson arrivals at 80% of its saturation rate -> p50 / p95 latency.
3. Autoscaling 1 -> N (``target_ongoing_requests: 1``) under 2·N clients: replicas over time, seconds to
   reach N, images/s over the last half of the run.

The ingress runs ``--ingress-replicas`` replicas and answers JPEG so encoding does not cap the figure.
CPU smoke run (fake GPUs, tiny model):

    python -m bench replica-scaling --source tiny-klein --size 64 --gpus 2 --replicas 1,2 --duration 5 \
        --fake-gpus --json /tmp/rs.json
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.lib.cli import suite_parser

APP = "scaling"


def service(args: argparse.Namespace, **deployment_options: Any) -> dict[str, Any]:
    side = args.size
    return {
        "models": [
            {
                "name": "bench",
                "source": args.source,
                "compile": args.compile,
                "warmup_shapes": [{"width": side, "height": side, "references": 0}],
                "default_size": [side, side],
                "deployment_options": {
                    "max_ongoing_requests": 2,
                    "max_queued_requests": 1024,
                    "ray_actor_options": {"num_gpus": 1, "num_cpus": 0.1 if args.fake_gpus else 2},
                    **deployment_options,
                },
            }
        ],
        "limits": {"max_side": 2048, "max_steps": 100, "request_timeout_s": 900},
        "ingress_options": {"num_replicas": args.ingress_replicas, "max_ongoing_requests": 1024},
    }


class Load:
    """HTTP clients posting text-to-image requests; records (finish time, latency, status)."""

    def __init__(self, url: str, args: argparse.Namespace):
        import httpx

        self.http = httpx.Client(base_url=url, timeout=900, limits=httpx.Limits(max_connections=512))
        self.body = {
            "model": "bench",
            "prompt": "a photo of a red car in front of a house at sunset",
            "size": f"{args.size}x{args.size}",
            "num_inference_steps": args.steps,
            "output_format": "jpeg",
        }
        self.records: list[tuple[float, float, int]] = []
        self.lock = threading.Lock()

    def one(self) -> None:
        start = time.perf_counter()
        status = self.http.post("/v1/images/generations", json={**self.body, "seed": random.randrange(2**31)})
        with self.lock:
            self.records.append((time.perf_counter(), time.perf_counter() - start, status.status_code))

    def closed_loop(self, clients: int, duration_s: float) -> dict[str, Any]:
        self.records.clear()
        stop = time.perf_counter() + duration_s

        def client() -> None:
            while time.perf_counter() < stop:
                self.one()

        with ThreadPoolExecutor(clients) as pool:
            for _ in range(clients):
                pool.submit(client)
        return self.summary(stop - duration_s, stop)

    def open_loop(self, rate: float, duration_s: float) -> dict[str, Any]:
        self.records.clear()
        start = time.perf_counter()
        with ThreadPoolExecutor(512) as pool:
            t = start
            while t < start + duration_s:
                t += random.expovariate(rate)
                time.sleep(max(0.0, t - time.perf_counter()))
                pool.submit(self.one)
        return self.summary(start, start + duration_s) | {"offered_per_s": rate}

    def summary(self, start: float, stop: float) -> dict[str, Any]:
        with self.lock:
            done = [(t, lat) for t, lat, status in self.records if status == 200 and t <= stop]
            failed = sum(status != 200 for _, _, status in self.records)
        latencies = [lat for _, lat in done]
        return {
            "images_per_s": round(len(done) / (stop - start), 4),
            "ok": len(done),
            "failed": failed,
            "p50_s": round(float(np.percentile(latencies, 50)), 3) if latencies else None,
            "p95_s": round(float(np.percentile(latencies, 95)), 3) if latencies else None,
        }


def running_replicas() -> int:
    from ray import serve

    status = serve.status().applications[APP].deployments["Flux2Model-bench"]
    return status.replica_states.get("RUNNING", 0)


def build_parser() -> argparse.ArgumentParser:
    parser = suite_parser("replica-scaling", __doc__)
    parser.add_argument("--source", default="random-klein-4b")
    parser.add_argument("--json", required=True)
    parser.add_argument("--gpus", type=int, default=0, help="0: all visible")
    parser.add_argument("--replicas", default="", help="comma-separated replica counts; default 1,2,4,..,gpus")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per measurement")
    parser.add_argument("--ingress-replicas", type=int, default=2)
    parser.add_argument("--compile", default="auto")
    parser.add_argument("--fake-gpus", action="store_true", help="CPU smoke run: Ray gets --gpus fake GPUs")
    parser.add_argument("--skip-autoscaling", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    import ray
    import torch
    from ray import serve

    from deployments.app import build_app
    from deployments.engine.parallel import free_port

    gpus = args.gpus or torch.cuda.device_count()
    counts = [int(r) for r in args.replicas.split(",")] if args.replicas else [r for r in (1, 2, 4, 8) if r <= gpus]
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"args": vars(args), "gpus": gpus, "saturation": {}}
    ray.init(num_gpus=gpus if args.fake_gpus else None, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    load = Load(f"http://127.0.0.1:{port}", args)
    try:
        for replicas in counts:
            t0 = time.perf_counter()
            serve.run(build_app(service(args, num_replicas=replicas)), name=APP, route_prefix="/")
            ready_s = time.perf_counter() - t0
            load.closed_loop(2 * replicas, min(10.0, args.duration / 3))  # settle: first requests, caches
            result = load.closed_loop(2 * replicas, args.duration) | {"ready_s": round(ready_s, 1)}
            base = report["saturation"].get("1", result)["images_per_s"]
            result["efficiency"] = round(result["images_per_s"] / (replicas * base), 3) if base else None
            report["saturation"][str(replicas)] = result
            print(f"{replicas} replicas: {result}", flush=True)
            path.write_text(json.dumps(report, indent=1))

        top = counts[-1]
        rate = 0.8 * report["saturation"][str(top)]["images_per_s"]
        report["latency_at_80pct"] = {"replicas": top, **load.open_loop(rate, args.duration)}
        print(f"80% load: {report['latency_at_80pct']}", flush=True)
        path.write_text(json.dumps(report, indent=1))

        if not args.skip_autoscaling:
            serve.delete(APP)
            autoscaling = {
                "min_replicas": 1,
                "max_replicas": top,
                "target_ongoing_requests": 1,
                "upscale_delay_s": 5,
                "downscale_delay_s": 600,
                "metrics_interval_s": 1,
                "look_back_period_s": 5,
            }
            serve.run(build_app(service(args, autoscaling_config=autoscaling)), name=APP, route_prefix="/")
            timeline: list[tuple[float, int]] = []
            start = time.perf_counter()
            done = threading.Event()

            def watch() -> None:
                while not done.is_set():
                    timeline.append((round(time.perf_counter() - start, 1), running_replicas()))
                    time.sleep(1.0)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            duration = max(args.duration * 3, 180.0) if not args.fake_gpus else args.duration * 3
            load.closed_loop(2 * top, duration)
            done.set()
            watcher.join()
            halfway = start + duration / 2
            late = [rec for rec in load.records if rec[0] >= halfway and rec[2] == 200]
            reached = next((t for t, n in timeline if n >= top), None)
            report["autoscaling"] = {
                "config": autoscaling,
                "seconds_to_max_replicas": reached,
                "images_per_s_second_half": round(len(late) / (duration / 2), 4),
                "timeline": timeline,
            }
            print(f"autoscaling: reached {top} replicas after {reached}s", flush=True)
            path.write_text(json.dumps(report, indent=1))
    finally:
        serve.shutdown()
        ray.shutdown()
