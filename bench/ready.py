"""Replica ready time in a fresh process: import, load, optimise (compile), warm up; then the first
requests after ready. Run twice with the same ``--cache`` folder for cold vs warm compile cache.

    python -m bench.ready --source <folder|random-klein-4b> --cache <dir> --json <out.json>
"""

from __future__ import annotations

import time

T_PROCESS = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--json", required=True)
    parser.add_argument("--shapes", default="1024x1024+0,1024x1024+1")
    parser.add_argument("--compile", default="regional")
    parser.add_argument("--after", type=int, default=10, help="requests timed after ready")
    parser.add_argument("--size", default="1024x1024+0")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    from bench.common import cuda_ok, make_request, sync
    from deployments.config import ModelConfig, Shape
    from deployments.engine import Flux2Engine, warm_up

    t_imports = time.perf_counter() - T_PROCESS
    shapes = []
    for item in args.shapes.split(","):
        size, refs = item.split("+")
        w, h = size.split("x")
        shapes.append(Shape(width=int(w), height=int(h), references=int(refs)))
    cache_files_before = sum(1 for p in Path(args.cache).rglob("*") if p.is_file()) if Path(args.cache).exists() else 0
    config = ModelConfig(
        source=args.source,
        compile=args.compile,
        compile_cache_dir=args.cache,
        warmup_shapes=tuple(shapes),
    )
    engine = Flux2Engine.from_config(config)
    t_loaded = time.perf_counter()
    warmup_times = warm_up(engine)
    sync()
    t_ready = time.perf_counter()
    size, refs = args.size.split("+")
    w, h = (int(x) for x in size.split("x"))
    after = []
    for i in range(args.after):
        t0 = time.perf_counter()
        engine.generate(make_request(w, h, int(refs), args.steps, seed=i))
        sync()
        after.append(time.perf_counter() - t0)
    result = {
        "source": args.source,
        "cache_files_before": cache_files_before,
        "cache_files_after": sum(1 for p in Path(args.cache).rglob("*") if p.is_file()),
        "imports_s": round(t_imports, 2),
        "load_and_optimize_s": round(engine.load_s, 2),
        "warmup_s": round(t_ready - t_loaded, 2),
        "warmup_detail_s": {k: round(v, 3) for k, v in warmup_times.items()},
        "ready_s_from_process_start": round(t_ready - T_PROCESS, 2),
        "ready_s_from_engine_start": round(t_ready - T_PROCESS - t_imports, 2),
        "after_ready_request_s": [round(x, 4) for x in after],
        "first_over_tenth": round(after[0] / after[-1], 3) if len(after) >= 2 else None,
        "unwarmed_compiles": engine.unwarmed_compiles,
        "gpu": cuda_ok(),
    }
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
