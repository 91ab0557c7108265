"""Context-parallel latency: one request split over N GPUs of one host vs the same request on one GPU.

    python -m bench cp-latency --source random-dev --degrees 1,2,4,8 --refs 1 --steps 50 --json out/cp.json

For each degree a fresh set of processes (one per GPU, NCCL; degree 1 = the plain single-GPU engine)
loads the pipeline, warms the shape up, times ``--n`` requests on every rank together and saves rank
0's images. Then each degree's images are compared with degree 1's (same seed): max and mean
absolute difference in uint8 levels and PSNR. ``--steps 1`` isolates one transformer step (the
tightest comparison); 50 steps show how bf16 differences grow over a whole run. Random weights are
built from seed 0 on every rank; a checksum all-reduce checks that the ranks really hold the same
weights. Rank 0's images of each degree are kept beside the JSON (``cp_images_<degree>.npy``).
CPU smoke run (gloo, tiny model):

    python -m bench cp-latency --source tiny-dev --size 64 --degrees 1,2 --steps 2 --n 1 --json /tmp/cp/cp.json
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from bench.lib.cli import suite_parser
from bench.lib.requests import make_request


def images_path(args: argparse.Namespace, degree: int) -> Path:
    return Path(args.json).parent / f"cp_images_{degree}.npy"


def model_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": "cp-bench",
        "source": args.source,
        "compile": args.compile,
        "attention_backend": args.attention_backend,
        "warmup_shapes": [{"width": args.size, "height": args.size, "references": args.refs}],
        "default_size": [args.size, args.size],
    }


def run_rank(rank: int, degree: int, port: int, args: argparse.Namespace, results: Any) -> None:
    """One rank (or the single-GPU engine when degree is 1): load, warm, time, save images."""
    try:
        import torch

        from deployments.config import ContextParallel, ModelConfig
        from deployments.engine import Flux2Engine, warm_up
        from deployments.engine.parallel import ContextParallelEngine, init_process_group

        config = ModelConfig.model_validate(model_config(args))
        start = time.perf_counter()
        if degree == 1:
            if torch.cuda.is_available():
                torch.cuda.set_device(0)
            engine = Flux2Engine.from_config(config)
        else:
            options = ContextParallel(degree=degree, mode=args.mode)
            init_process_group(rank, degree, "127.0.0.1", port)
            engine = ContextParallelEngine.from_config(config, options)
            checksum = torch.tensor(
                [sum(float(p.float().sum()) for p in engine.pipeline.transformer.parameters())],
                device=engine.loaded.device,
                dtype=torch.float64,
            )
            spread = [checksum.clone(), checksum.clone()]
            torch.distributed.all_reduce(spread[0], op=torch.distributed.ReduceOp.MAX)
            torch.distributed.all_reduce(spread[1], op=torch.distributed.ReduceOp.MIN)
            if float(spread[0] - spread[1]) != 0.0:
                raise RuntimeError(f"ranks hold different weights: checksums {float(spread[1])}..{float(spread[0])}")
        load_s = time.perf_counter() - start
        warm = warm_up(engine)
        request = make_request(args.size, args.size, args.refs, args.steps, seed=args.seed)
        times, images = [], None
        for _ in range(args.n):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            result = engine.generate(request)
            times.append(time.perf_counter() - t0)
            images = result.images
        if rank == 0:
            np.save(images_path(args, degree), np.stack(images))
            peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
            results.put({"degree": degree, "load_s": load_s, "warmup": warm, "times_s": times, "peak_gib": peak})
        if degree > 1:
            torch.distributed.destroy_process_group()
    except BaseException:
        results.put({"degree": degree, "rank": rank, "error": traceback.format_exc()})


def compare(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    mse = float((diff**2).mean())
    return {
        "max_abs": float(diff.max()),
        "mean_abs": round(float(diff.mean()), 4),
        "psnr_db": round(10 * np.log10(255**2 / mse), 2) if mse else float("inf"),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = suite_parser("cp-latency", __doc__)
    parser.add_argument("--source", default="random-dev")
    parser.add_argument("--json", required=True)
    parser.add_argument("--degrees", default="1,2,4,8")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--refs", type=int, default=1, help="reference images (1 = the issue's edit case)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--n", type=int, default=3, help="timed requests per degree")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", choices=["ulysses", "ring"], default="ulysses")
    parser.add_argument("--compile", default="auto")
    parser.add_argument("--attention-backend", default=None, help="e.g. _native_cudnn (needed for ring)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per degree")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    import torch.multiprocessing as mp

    from deployments.engine.parallel import free_port

    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"args": vars(args), "runs": {}}
    ctx = mp.get_context("spawn")
    for degree in [int(d) for d in args.degrees.split(",")]:
        results, port = ctx.Queue(), free_port()
        ranks = [ctx.Process(target=run_rank, args=(r, degree, port, args, results)) for r in range(degree)]
        for process in ranks:
            process.start()
        try:
            outcome = results.get(timeout=args.timeout)
        except Exception as exc:
            outcome = {"degree": degree, "error": f"no answer: {exc!r}"}
        for process in ranks:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
        if "times_s" in outcome:
            outcome["p50_s"] = float(np.median(outcome["times_s"]))
        report["runs"][str(degree)] = outcome
        print(json.dumps(outcome, default=str)[:2000], flush=True)
        path.write_text(json.dumps(report, indent=1, default=str))

    base = report["runs"].get("1", {})
    for degree, run in report["runs"].items():
        if degree == "1" or "p50_s" not in run or "p50_s" not in base:
            continue
        run["latency_vs_1gpu"] = round(run["p50_s"] / base["p50_s"], 3)
        run["vs_1gpu_images"] = compare(np.load(images_path(args, int(degree))), np.load(images_path(args, 1)))
    path.write_text(json.dumps(report, indent=1, default=str))
    print(
        json.dumps(
            {
                d: {k: r.get(k) for k in ("p50_s", "latency_vs_1gpu", "vs_1gpu_images")}
                for d, r in report["runs"].items()
            }
        )
    )
