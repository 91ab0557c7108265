"""Every speed option beside its deviation, in one process: latency and speed-up against a baseline engine,
the transformer step against the GPU's own floors measured in the same process, and how far the images
move (relative L2, cosine) on the same request and seed.

    python -m bench options --source random-klein-4b --steps 4 --shapes 1024x1024+0,1024x1024+1 --floors \\
        --baseline compile=none,compile_vae=false,compile_text_encoder=false \\
        --variant compile=regional --variant compile=regional,quantization=fp8 \\
        --variant compile=regional,preset=fast --json out.json

The baseline is ``--baseline`` (default ``compile=none``: the diffusers pipeline call as is, eager bf16).
Variant values are JSON where they parse as JSON, else strings; keys are ModelConfig fields. One engine at
a time is loaded, warmed up on every shape (``--shapes WxH+R,...``, or ``--size`` and ``--references``),
and times ``--repeats`` requests a shape, each split into stages with CUDA events (text encoder,
transformer calls, VAE encode and decode; "other" is the rest). ``--floors`` measures the bf16 (burst,
sustained) and fp8 matmul rates first and counts each shape's step FLOPs, so every row says how far its
step is from them. A variant that cannot be built (say, fa3 on a GPU without it) is recorded with its error.
The JSON is written after every row; the markdown table of all rows ends the output and the JSON.

Every rung times a new request: the repeats share one prompt and one reference, so the engine's prompt and latent
caches are off (``bench.lib.requests.UNCACHED``) unless a variant sets them (``prompt_cache_mb=256,latent_cache_mb=64``
is the rung of a request whose prompt and reference the engine has seen).
"""

from __future__ import annotations

import argparse
import statistics
import time
import traceback
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.lib.cli import parse_overrides, parse_shapes, suite_parser
from bench.lib.deviation import deviation
from bench.lib.device import cuda_ok, free_cuda, peak_vram_gib, sync
from bench.lib.floors import matmul_ceiling, transformer_step_flops
from bench.lib.pipeline_timing import StageTimer
from bench.lib.requests import UNCACHED
from bench.lib.results import Results, log
from deployments.config import RANDOM_SOURCES, ModelConfig, Shape
from deployments.types import ImageRequest

if TYPE_CHECKING:
    from deployments.engine import Flux2Engine

PROMPT = "a photo of a red car in front of a house"


def request_for(shape: tuple[int, int, int], steps: int) -> ImageRequest:
    width, height, refs = shape
    rng = np.random.default_rng(0)
    images = tuple(rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(refs))
    return ImageRequest(prompt=PROMPT, width=width, height=height, images=images, seed=0, num_inference_steps=steps)


def measure(engine: Any, request: ImageRequest, repeats: int) -> dict[str, Any]:
    """Time ``repeats`` runs of a warmed engine: the image, end-to-end times, the median milliseconds of each
    pipeline stage ("other" = the rest: latents, scheduler, reference preprocessing, uint8 conversion,
    Python), the median transformer forward and the peak VRAM."""
    import torch

    timer = StageTimer(engine.pipeline)
    if cuda_ok():
        torch.cuda.reset_peak_memory_stats()
    times, image, stages, forwards = [], None, [], []
    try:
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            image = engine.generate(request).images[0]
            sync()
            times.append(time.perf_counter() - start)
            stage_ms = timer.take_ms()
            forwards.extend(timer.step_ms)
            stages.append({**stage_ms, "other": times[-1] * 1e3 - sum(stage_ms.values())})
    finally:
        timer.remove()
    return {
        "image": image,
        "times": times,
        "stage_ms_p50": {key: round(statistics.median(s[key] for s in stages), 2) for key in stages[0]},
        "step_ms": round(statistics.median(forwards), 2),
        "peak_vram_gib": peak_vram_gib(),
    }


def measure_floors(source: str, shapes: list[tuple[int, int, int]]) -> dict[str, Any]:
    """The process's matmul rates and each shape's step floors: FLOPs over the bf16 burst, bf16 sustained and
    fp8 rates."""
    if not cuda_ok():
        return {"skipped": "no GPU"}
    if source not in RANDOM_SOURCES:
        return {"skipped": f"FLOPs are counted for {', '.join(RANDOM_SOURCES)} only"}
    ceiling = matmul_ceiling()
    rates = {"bf16_burst": "tflops", "bf16_sustained": "sustained_tflops", "fp8": "fp8_rowwise_tflops"}
    per_shape = {}
    for shape in shapes:
        flops = transformer_step_flops(source, *shape)
        floors = {f"{name}_ms": round(flops / (ceiling[key] * 1e12) * 1e3, 2) for name, key in rates.items()}
        per_shape[shape_label(shape)] = {"tflop": round(flops / 1e12, 2), **floors}
    return {"ceiling": ceiling, "shapes": per_shape}


def shape_label(shape: tuple[int, int, int]) -> str:
    width, height, refs = shape
    return f"{width}x{height}+{refs}"


def with_floors(row: dict[str, Any], floors: dict[str, Any]) -> dict[str, Any]:
    """The row's step over each floor of its shape (none where floors were not measured)."""
    shape_floors = floors.get("shapes", {}).get(row["shape"])
    if not shape_floors:
        return row
    ratios = {
        f"step_over_{name}_floor": round(row["step_ms"] / shape_floors[f"{name}_ms"], 3)
        for name in ("bf16_burst", "bf16_sustained", "fp8")
    }
    return {**row, **ratios}


TABLE_HEADER = (
    "| variant | shape | e2e p50 | speed-up | step | step / bf16 sustained floor | step / fp8 floor "
    "| rel. L2 | cosine | peak VRAM |\n|---|---|---|---|---|---|---|---|---|---|"
)


def times(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.3f}x" if key in row else "-"


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as one markdown table (a failed variant shows its error)."""
    lines = [TABLE_HEADER]
    for row in rows:
        if "error" in row:
            error = " ".join(row["error"].split())[:160]
            lines.append(f"| {row['variant']} | {row['shape']} | error: {error} ||||||||")
            continue
        lines.append(
            f"| {row['variant']} | {row['shape']} | {row['p50_s']:.3f} s | {row['speedup']:.2f}x "
            f"| {row['step_ms']:.2f} ms | {times(row, 'step_over_bf16_sustained_floor')} "
            f"| {times(row, 'step_over_fp8_floor')} "
            f"| {row['rel_l2']:.4f} | {row['cosine']:.6f} | {row['peak_vram_gib']} GiB |"
        )
    return "\n".join(lines)


def warmed_engine(config: ModelConfig) -> Flux2Engine:
    """The variant's engine, warmed up on every shape; built in its own frame, so an engine whose warm-up
    raises is not kept alive by a local while the next variant loads."""
    from deployments.engine import Flux2Engine, warm_up

    engine = Flux2Engine.from_config(config)
    warm_up(engine)
    return engine


def build_parser() -> argparse.ArgumentParser:
    parser = suite_parser("options", __doc__)
    parser.add_argument("--source", required=True, help="random-klein-4b | random-klein-9b | random-dev | a folder")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--references", type=int, default=0)
    parser.add_argument("--shapes", type=parse_shapes, default=None, help="WxH+R,... (default: --size, --references)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--floors", action="store_true", help="measure the matmul rates and each step's floors")
    parser.add_argument("--baseline", default="compile=none", help="ModelConfig overrides, key=value,...")
    parser.add_argument("--variant", action="append", default=[], help="ModelConfig overrides, repeatable")
    parser.add_argument("--json", required=True)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    shapes = args.shapes or [(args.size, args.size, args.references)]
    res = Results(args.json)
    res["settings"] = {"source": args.source, "steps": args.steps, "repeats": args.repeats, "shapes": shapes}
    floors = measure_floors(args.source, shapes) if args.floors else {"skipped": "no --floors"}
    res["floors"] = floors
    rows: list[dict[str, Any]] = []
    baseline: dict[str, dict[str, Any]] = {}  # per shape: the baseline's image and p50
    warmup = tuple(Shape(width=w, height=h, references=r) for w, h, r in shapes)
    for label in [args.baseline, *args.variant]:
        log(f"== {label}")
        try:
            options = {**UNCACHED, **parse_overrides(label)}
            engine = warmed_engine(ModelConfig(source=args.source, warmup_shapes=warmup, **options))
        except Exception as exc:  # one variant failing must not lose the others' figures
            traceback.print_exc()
            rows += [{"variant": label, "shape": shape_label(shape), "error": repr(exc)[:500]} for shape in shapes]
            res["rows"] = rows
            free_cuda()
            continue
        for shape in shapes:
            measured = measure(engine, request_for(shape, args.steps), args.repeats)
            p50 = statistics.median(measured["times"])
            reference = baseline.setdefault(shape_label(shape), {"image": measured["image"], "p50": p50})
            row = {
                "variant": label,
                "shape": shape_label(shape),
                "p50_s": round(p50, 4),
                "speedup": round(reference["p50"] / p50, 3),
                **{key: round(value, 6) for key, value in deviation(measured["image"], reference["image"]).items()},
                "step_ms": measured["step_ms"],
                "peak_vram_gib": measured["peak_vram_gib"],
                "stage_ms_p50": measured["stage_ms_p50"],
                "runs": {"attention_backend": engine.info.attention_backend, "quantization": engine.info.quantization},
            }
            rows.append(with_floors(row, floors))
            res["rows"] = rows
        del engine  # keep nothing alive into the next variant
        free_cuda()
    res["table"] = table(rows)
    print(res["table"], flush=True)
