"""Replica ready time, cold then warm compile cache: two fresh processes, one after the other, each of which
imports, loads, optimises (compiles) and warms up the engine as a replica does, then times the first
requests after ready.

    python -m bench ready --source random-klein-4b --cache /tmp/ccr --json out.json

``--cache`` must be empty or absent: the first process fills it (cold), the second reads it (warm).
"""

from __future__ import annotations

import time

T_PROCESS = time.perf_counter()  # "from process start" includes the imports below and the engine's

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench.lib.cli import parse_shape, parse_shapes, suite_parser  # noqa: E402
from bench.lib.device import cuda_ok, sync  # noqa: E402
from bench.lib.requests import make_request  # noqa: E402


def cache_files(folder: Path) -> int:
    return sum(1 for path in folder.rglob("*") if path.is_file()) if folder.exists() else 0


def measure_once(args: argparse.Namespace) -> dict[str, Any]:
    """This process: engine start to ready, then ``--after`` requests."""
    from deployments.config import ModelConfig, Shape
    from deployments.engine import Flux2Engine, warm_up

    t_imports = time.perf_counter() - T_PROCESS
    cache = Path(args.cache)
    files_before = cache_files(cache)
    shapes = tuple(Shape(width=w, height=h, references=r) for w, h, r in args.shapes)
    config = ModelConfig(source=args.source, compile=args.compile, compile_cache_dir=args.cache, warmup_shapes=shapes)
    engine = Flux2Engine.from_config(config)
    t_loaded = time.perf_counter()
    warmup_times = warm_up(engine)
    sync()
    t_ready = time.perf_counter()
    after = []
    for i in range(args.after):
        start = time.perf_counter()
        engine.generate(make_request(*args.size, args.steps, seed=i))
        sync()
        after.append(time.perf_counter() - start)
    return {
        "source": args.source,
        "cache_files_before": files_before,
        "cache_files_after": cache_files(cache),
        "imports_s": round(t_imports, 2),
        "load_and_optimize_s": round(engine.load_s, 2),
        "warmup_s": round(t_ready - t_loaded, 2),
        "warmup_detail_s": {key: round(value, 3) for key, value in warmup_times.items()},
        "ready_s_from_process_start": round(t_ready - T_PROCESS, 2),
        "ready_s_from_engine_start": round(t_ready - T_PROCESS - t_imports, 2),
        "after_ready_request_s": [round(x, 4) for x in after],
        "first_over_tenth": round(after[0] / after[-1], 3) if len(after) >= 2 else None,
        "unwarmed_compiles": engine.unwarmed_compiles,
        "gpu": cuda_ok(),
    }


def cold_then_warm(argv: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Run this suite twice more, ``--once`` each, in fresh processes; their figures and the warm/cold ratios."""
    out: dict[str, Any] = {}
    for label in ("cold", "warm"):
        target = Path(args.json).with_suffix(f".{label}.json")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bench", "ready", *argv, "--once", "--json", str(target)], check=True)
        out[label] = json.loads(target.read_text()) | {"subprocess_wall_s": round(time.perf_counter() - start, 2)}
        target.unlink()
    out["warm_over_cold"] = {
        since: round(out["warm"][f"ready_s_from_{since}"] / out["cold"][f"ready_s_from_{since}"], 3)
        for since in ("engine_start", "process_start")
    }
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = suite_parser("ready", __doc__)
    parser.add_argument("--source", required=True)
    parser.add_argument("--cache", required=True, help="compile cache folder, empty or absent")
    parser.add_argument("--json", required=True)
    parser.add_argument("--shapes", type=parse_shapes, default="1024x1024+0,1024x1024+1", help="warm-up, WxH+R,...")
    parser.add_argument("--compile", default="regional")
    parser.add_argument("--after", type=int, default=10, help="requests timed after ready")
    parser.add_argument("--size", type=parse_shape, default="1024x1024+0", help="of the requests after ready")
    parser.add_argument("--steps", type=int, default=4, help="of the requests after ready")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)  # one fresh process of the two
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.once:
        result = measure_once(args)
    elif cache_files(Path(args.cache)):
        raise SystemExit(f"--cache {args.cache} holds files: the cold run needs an empty folder")
    else:
        result = cold_then_warm(argv, args)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result), flush=True)
