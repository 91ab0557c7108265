"""Where a transformer step's time goes, and which compile variant runs it fastest.

For each variant (ModelConfig overrides applied to the transformer alone through the engine's
``apply_optimizations``, plus ``inductor.<name>=value`` settings patched while it compiles) on a fresh
transformer with random weights: warm up 1024² text-to-image and time it (its static graph), then warm
up the edit shape (one reference; dynamo recompiles with dynamic shapes, as in the engine after its
warm-up) and time both shapes again. Each variant's dynamic text-to-image step is then profiled:
device time per kernel class (matmul, attention, inductor's fused kernels, other), the matmul and
attention rates achieved on the FLOPs counted for them, and the GPU's idle time inside the step.

    python -m bench step --source random-klein-4b --variant compile=regional \\
        --variant compile=regional,compile_mode=max-autotune-no-cudagraphs --json $OUT/step_klein.json

The matmul ceiling is measured in the same process, as a burst and sustained (docs/benchmarks.md: the
H200's clock drops under back-to-back matmuls), so each step is reported against both floors. Steps run
back to back, as in a pipeline: CUDA events around each, one sync at the end.

``--source tiny`` runs the plumbing on the tiny transformer (CPU tests; no kernel classes there).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from bench.lib.cli import parse_overrides, suite_parser
from bench.lib.device import cuda_ok, free_cuda, sync
from bench.lib.floors import count_step_flops, floors_ms, matmul_ceiling, step_inputs
from bench.lib.results import Deadline
from bench.lib.timing import timed_calls
from deployments.config import ModelConfig

if TYPE_CHECKING:
    import torch

# Kernel classes by name, first match wins: cuBLAS and inductor's GEMM templates, then inductor's other
# kernels (named after the ops they fuse, which may include the attention they feed), then attention
# (cuDNN's kernels are named ...sdpa...flash_fprop...), then the rest (eager pointwise, copies).
KERNEL_CLASSES = (
    ("matmul", re.compile(r"gemm|nvjet|xmma|cutlass|triton_tem|splitk", re.I)),
    ("inductor_fused", re.compile(r"^triton_", re.I)),
    ("attention", re.compile(r"sdpa|fmha|flash|attention|fprop", re.I)),
)


def build(source: str, device: str) -> torch.nn.Module:
    if source == "tiny":
        from deployments.engine.synthetic.tiny import build_tiny_klein

        return build_tiny_klein().transformer.to(device).requires_grad_(False)
    from deployments.engine.synthetic.random_weights import build_transformer

    return build_transformer(source, device=device)


def time_steps(model: torch.nn.Module, inputs: dict[str, Any], n: int) -> list[float]:
    """Milliseconds of each of ``n`` forwards, back to back as a pipeline runs its steps."""
    import torch

    with torch.no_grad():
        return [round(ms, 3) for ms in timed_calls(lambda: model(**inputs), n)]


def kernel_class(name: str) -> str:
    for label, pattern in KERNEL_CLASSES:
        if pattern.search(name):
            return label
    return "other"


def profile_steps(model: torch.nn.Module, inputs: dict[str, Any], steps: int) -> dict[str, Any]:
    """Device time per kernel class per step, the busiest kernels, and the idle time between kernels."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        model(**inputs)
        sync()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                model(**inputs)
            sync()
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    if not kernels:
        return {"skipped": "no device kernels (CPU run)"}
    per_class: dict[str, float] = {}
    per_name: dict[str, float] = {}
    spans = sorted((e.time_range.start, e.time_range.end) for e in kernels)
    for event in kernels:
        us, label = event.time_range.end - event.time_range.start, kernel_class(event.name)
        per_class[label] = per_class.get(label, 0.0) + us
        per_name[event.name] = per_name.get(event.name, 0.0) + us
    busy, cursor = 0.0, spans[0][0]
    for start, end in spans:  # union of kernel intervals
        if end > cursor:
            busy += end - max(start, cursor)
            cursor = end
    wall = spans[-1][1] - spans[0][0]
    top = sorted(per_name.items(), key=lambda item: -item[1])[:12]
    return {
        "class_ms_per_step": {k: round(v / 1e3 / steps, 3) for k, v in sorted(per_class.items())},
        "kernels_per_step": round(len(kernels) / steps),
        "busy_ms_per_step": round(busy / 1e3 / steps, 3),
        "idle_fraction": round(1 - busy / wall, 4),
        "top_kernels_ms_per_step": [[name[:110], kernel_class(name), round(us / 1e3 / steps, 3)] for name, us in top],
    }


def measure_variant(
    source: str, label: str, shapes: dict[str, dict], repeats: int, profile_n: int, device: str
) -> dict[str, Any]:
    import torch._inductor.config

    from deployments.engine.optimize import apply_optimizations

    overrides = parse_overrides(label)
    inductor = {key[len("inductor.") :]: overrides.pop(key) for key in list(overrides) if key.startswith("inductor.")}
    source_name = "tiny-klein" if source == "tiny" else source
    config = ModelConfig(source=source_name, compile_vae=False, compile_text_encoder=False, **overrides)
    torch._dynamo.reset()
    model = build(source, device)
    row: dict[str, Any] = {"variant": label}
    with torch._inductor.config.patch(inductor):
        row["compile"] = apply_optimizations(SimpleNamespace(transformer=model), config, torch.device(device))
        (first, first_inputs), (second, second_inputs) = shapes.items()
        start = time.perf_counter()
        time_steps(model, first_inputs, 3)
        row[f"warmup_{first}_s"] = round(time.perf_counter() - start, 2)
        row[f"{first}_static_ms"] = statistics.median(time_steps(model, first_inputs, repeats))
        start = time.perf_counter()
        time_steps(model, second_inputs, 3)
        row[f"warmup_{second}_s"] = round(time.perf_counter() - start, 2)
    for name, inputs in shapes.items():
        row[f"{name}_ms"] = statistics.median(time_steps(model, inputs, repeats))
    row["profile_" + first] = profile_steps(model, first_inputs, profile_n)
    del model
    free_cuda()
    return row


def measure_with_ratios(
    args: argparse.Namespace, label: str, shapes: dict[str, dict], floors: dict[str, dict], device: str
) -> dict[str, Any]:
    """One variant's row, with its steps over each floor and its kernels' achieved rates."""
    import torch

    try:
        row = measure_variant(args.source, label, shapes, args.repeats, args.profile_steps, device)
    except Exception as exc:  # one variant failing to compile must not lose the others' figures
        torch._dynamo.reset()
        return {"variant": label, "error": repr(exc)[:500]}
    for name, shape in floors.items():
        for floor, ratio in (("floor_ms", "vs_floor"), ("sustained_floor_ms", "vs_sustained_floor")):
            if floor in shape:
                row[f"{name}_{ratio}"] = round(row[f"{name}_ms"] / shape[floor], 3)
    profile = row["profile_t2i"]
    if "class_ms_per_step" in profile:  # achieved rates of the matmul and attention kernels
        for kind in ("matmul", "attention"):
            if profile["class_ms_per_step"].get(kind):
                tflop = floors["t2i"][f"{kind}_tflop"]
                profile[f"{kind}_tflops"] = round(tflop / profile["class_ms_per_step"][kind] * 1e3, 1)
    return row


def build_parser() -> argparse.ArgumentParser:
    parser = suite_parser("step", __doc__)
    parser.add_argument("--source", required=True, help="random-dev | random-klein-4b | random-klein-9b | tiny")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--variant", action="append", required=True)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--budget", type=float, default=560, help="seconds; variants that would not fit are skipped")
    parser.add_argument("--variant-s", type=float, default=90, help="expected seconds a variant")
    parser.add_argument("--json", required=True)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    deadline = Deadline(args.budget)
    device = "cuda" if cuda_ok() else "cpu"
    flops_device = "cpu" if args.source == "tiny" else "meta"  # full-size FLOPs are counted without running
    flops_model = build(args.source, flops_device)
    config = flops_model.config
    shapes, result = {}, {"source": args.source, "size": args.size, "ceiling": matmul_ceiling(), "shapes": {}}
    for name, refs in (("t2i", 0), ("edit1", 1)):
        meta_inputs = step_inputs(config, args.size, args.size, refs, device=flops_device, dtype=flops_model.dtype)
        flops = count_step_flops(flops_model, meta_inputs)
        result["shapes"][name] = {
            **{f"{kind}_tflop": round(value / 1e12, 6) for kind, value in flops.items()},
            **floors_ms(flops["total"], result["ceiling"]),
        }
        shapes[name] = step_inputs(config, args.size, args.size, refs, device=device, dtype=flops_model.dtype)
    del flops_model
    result["rows"] = []
    for label in args.variant:
        if deadline.allows(args.variant_s):
            row = measure_with_ratios(args, label, shapes, result["shapes"], device)
        else:
            row = {"variant": label, "skipped": f"{deadline.left():.0f} s left"}
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        with open(args.json, "w") as handle:  # after every variant: a killed run keeps what it measured
            json.dump(result, handle, indent=1)
