"""Attention at FLUX.2's shapes: cuDNN SDPA bf16 vs FA3 bf16 vs FA3 fp8, alone and in the transformer step.

    python -m bench attention --source random-klein-4b --json $OUT/attention-klein4b.json

``kernels``: one attention call at the 1024² shapes of klein-4B (24 heads) and dev (48), text-to-image (4608
tokens) and edit with one reference (8704): each kernel alone on ready inputs, then compiled behind the QK
RMSNorm + RoPE that feeds it (so fp8's casts are fused as in the engine), with rel-L2 / cosine against
float32 attention. ``step``: one transformer forward of ``--source`` per variant (quantization and
attention_backend through the engine's ``apply_optimizations``, regional compile), steps back to back,
against the bf16 and fp8 floors at the rates measured in the same process, with the deviation from the bf16
engine step. ``profile``: the device kernels of one compiled block of each kind, per fp8 variant, to see
which casts run as kernels of their own.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from bench.lib.cli import parse_shapes
from bench.lib.deviation import compare
from bench.lib.device import free_cuda, sync
from bench.lib.floors import count_step_flops, matmul_ceiling, step_inputs
from bench.lib.results import Results, log
from bench.lib.timing import timed_calls

# (heads, tokens) of one attention call at 1024²: 512 text + 4096 image tokens (+ 4096 for a reference)
KERNEL_SHAPES = {
    "klein4b-t2i": (24, 4608),
    "klein4b-edit1": (24, 8704),
    "dev-t2i": (48, 4608),
    "dev-edit1": (48, 8704),
}
HEAD_DIM = 128
VARIANTS = {  # ModelConfig overrides; "bf16" is the engine's default step every other one is compared with
    "bf16": {},
    "bf16+fa3_fp8": {"attention_backend": "fa3_fp8"},
    "fp8": {"quantization": "fp8"},
    "fp8+fa3": {"quantization": "fp8", "attention_backend": "fa3"},
    "fp8+fa3_fp8": {"quantization": "fp8", "attention_backend": "fa3_fp8"},
}


def median_ms(call: Callable[[], Any], reps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        call()
    return round(statistics.median(timed_calls(call, reps)), 4)


def rope_ids(tokens: int) -> Any:
    """Position ids as the pipelines build them: 512 text tokens, then 64 x 64 image grids (10 apart in t)."""
    import torch

    images = (tokens - 512) // 4096
    span, zero = torch.arange(64), torch.zeros(1, dtype=torch.long)
    grids = [torch.cartesian_prod(torch.full((1,), 10 * r), span, span, zero) for r in range(images)]
    return torch.cat([torch.cartesian_prod(zero, zero, zero, torch.arange(512)), *grids])


def kernel_figures(heads: int, tokens: int, reps: int) -> dict[str, Any]:
    """Each attention path at one shape: ms, TFLOP/s and deviation from float32 attention (inputs random,
    Q and K through a unit-weight RMSNorm and RoPE as in the random-weight models)."""
    import torch
    from diffusers.models.embeddings import apply_rotary_emb
    from diffusers.models.transformers.transformer_flux2 import Flux2PosEmbed
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from deployments.engine.attention import attend, fa3_forward, quantize_bounded, quantize_per_head, rms_rope_bound

    torch.manual_seed(0)
    raw_q, raw_k, value = (torch.randn(1, tokens, heads, HEAD_DIM, device="cuda", dtype=torch.bfloat16) for _ in "qkv")
    norm = torch.nn.RMSNorm(HEAD_DIM, eps=1e-6, device="cuda", dtype=torch.bfloat16)
    rope = Flux2PosEmbed(theta=2000, axes_dim=[32, 32, 32, 32])(rope_ids(tokens).cuda())
    bound = rms_rope_bound(HEAD_DIM, norm)

    def normed(raw_q: torch.Tensor, raw_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(apply_rotary_emb(norm(x), rope, sequence_dim=1) for x in (raw_q, raw_k))

    def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # (B, H, S, D) out
        return torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)))

    def cudnn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return sdpa(q, k, v)

    def native(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # as diffusers' default runs it
        return sdpa(q, k, v).transpose(1, 2).flatten(2, 3)

    with torch.no_grad():
        q, k = normed(raw_q, raw_k)
        with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):  # float32 all through: the reference
            ref = sdpa(q.float(), k.float(), value.float()).transpose(1, 2).flatten(2, 3)
        (q8, qd), (k8, kd), (v8, vd) = quantize_bounded(q, bound), quantize_bounded(k, bound), quantize_per_head(value)
        (q8h, qdh), (k8h, kdh) = quantize_per_head(q), quantize_per_head(k)
        bshd = lambda out: out.flatten(2, 3)  # noqa: E731
        paths: dict[str, tuple[Callable[[], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {
            "cudnn_bf16": (lambda: cudnn(q, k, value), lambda out: out.transpose(1, 2).flatten(2, 3)),
            "fa3_bf16": (lambda: fa3_forward(q, k, value), bshd),
            "fa3_fp8": (lambda: fa3_forward(q8, k8, v8, qd, kd, vd), bshd),
            "fa3_fp8_per_head_qk": (lambda: fa3_forward(q8h, k8h, v8, qdh, kdh, vd), bshd),
        }
        fused = {  # RMSNorm + RoPE (+ the casts) + attention, compiled: what a compiled block runs
            "norm_rope+sdpa_native": lambda rq, rk, v: native(*normed(rq, rk), v),
            "norm_rope+fa3_bf16": lambda rq, rk, v: attend(*normed(rq, rk), v, None),
            "norm_rope+fa3_fp8": lambda rq, rk, v: attend(*normed(rq, rk), v, (bound, bound)),
        }
        for name, fn in fused.items():
            compiled = torch.compile(fn, fullgraph=True, dynamic=False)
            paths[name] = (lambda compiled=compiled: compiled(raw_q, raw_k, value), lambda out: out)
        flops = 4 * heads * tokens * tokens * HEAD_DIM
        figures: dict[str, Any] = {"heads": heads, "tokens": tokens}
        for name, (path, flat) in paths.items():
            try:
                ms = median_ms(path, reps)
                figures[name] = {"ms": ms, "tflops": round(flops / ms / 1e9, 1), **compare(flat(path()), ref)}
            except Exception as exc:  # a path this build or GPU lacks: say so, keep the others
                figures[name] = {"error": repr(exc)[:300]}
        torch._dynamo.reset()
    return figures


def block_kernels(block: Any, args: tuple, kwargs: dict, calls: int = 5) -> dict[str, Any]:
    """The device kernels of one block call (mean of ``calls``): name, launches and µs, busiest first."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        block(*args, **kwargs)
        sync()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                block(*args, **kwargs)
            sync()
    per_name: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type == DeviceType.CUDA:
            entry = per_name.setdefault(event.name, [0, 0.0])
            entry[0] += 1
            entry[1] += event.time_range.end - event.time_range.start
    rows = sorted(
        ([name[:200], n / calls, round(us / calls, 1)] for name, (n, us) in per_name.items()), key=lambda r: -r[2]
    )
    return {"us": round(sum(r[2] for r in rows), 1), "kernels": sum(r[1] for r in rows), "rows": rows}


def capture_block_inputs(transformer: Any, inputs: dict[str, Any]) -> dict[str, tuple[Any, tuple, dict]]:
    """The arguments the first double-stream and the first single-stream block get in one forward."""
    import torch

    blocks = {"double": transformer.transformer_blocks[0], "single": transformer.single_transformer_blocks[0]}
    captured: dict[str, tuple[Any, tuple, dict]] = {}

    def keep(name: str) -> Callable[..., None]:
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            captured.setdefault(name, (module, args, kwargs))

        return hook

    hooks = [block.register_forward_pre_hook(keep(name), with_kwargs=True) for name, block in blocks.items()]
    with torch.no_grad():
        transformer(**inputs)
    for hook in hooks:
        hook.remove()
    return captured


def step_section(args: argparse.Namespace, results: Any) -> None:
    """Every variant's compiled transformer step at every shape, beside the floors and the bf16 step."""
    import torch

    from deployments.engine.synthetic.random_weights import build_transformer, transformer_config

    ceiling = matmul_ceiling()
    results["ceiling"] = ceiling
    config = transformer_config(args.source)
    shapes = {f"{w}x{h}+{r}": (w, h, r) for w, h, r in parse_shapes(args.shapes)}
    meta = build_transformer(args.source, device="meta")
    floors, inputs = {}, {}
    for label, (w, h, r) in shapes.items():
        flops = count_step_flops(meta, step_inputs(config, w, h, r))
        rates = {"bf16_burst": ceiling["tflops"], "bf16_sustained": ceiling["sustained_tflops"]}
        rates["fp8_burst"] = ceiling.get("fp8_rowwise_tflops")
        floors[label] = {"tflop": {k: round(v / 1e12, 2) for k, v in flops.items()}}
        floors[label].update({f"{k}_floor_ms": round(flops["total"] / (v * 1e9), 2) for k, v in rates.items() if v})
        torch.manual_seed(1)
        inputs[label] = step_inputs(config, w, h, r, device="cuda")
    results["floors"] = floors
    del meta
    references: dict[str, dict[str, torch.Tensor]] = {}
    for variant in args.variants.split(","):
        try:
            figures = measure_variant(args, variant, inputs, floors, references)
        except Exception as exc:  # keep the other variants' figures
            figures = {"overrides": VARIANTS[variant], "error": repr(exc)[:500]}
            log(f"{variant} failed: {exc!r}"[:500])
        torch._dynamo.reset()  # its compiled blocks go with the weights
        free_cuda()
        torch.cuda.reset_peak_memory_stats()
        results[f"step {variant}"] = figures


def measure_variant(
    args: argparse.Namespace, variant: str, inputs: dict[str, dict], floors: dict[str, dict], references: dict
) -> dict[str, Any]:
    """One variant on fresh random weights (the same seed each time): first call, step ms, deviation."""
    import torch

    from deployments.config import ModelConfig
    from deployments.engine.optimize import apply_optimizations
    from deployments.engine.synthetic.random_weights import build_transformer

    overrides = VARIANTS[variant]
    figures: dict[str, Any] = {"overrides": overrides}
    torch._dynamo.reset()
    torch.manual_seed(0)
    transformer = build_transformer(args.source, device="cuda")
    model_config = ModelConfig(
        source=args.source,
        compile="regional",
        compile_vae=False,
        compile_text_encoder=False,
        compile_cache_dir=args.cache,
        **overrides,
    )
    apply_optimizations(SimpleNamespace(transformer=transformer), model_config, torch.device("cuda"))
    for label, step in inputs.items():
        start = time.perf_counter()
        with torch.no_grad():
            out = transformer(**step)[0].float()
        torch.cuda.synchronize()
        first_call_s = round(time.perf_counter() - start, 1)
        with torch.no_grad():
            ms = median_ms(lambda step=step: transformer(**step), args.reps)
        references.setdefault(label, {})[variant] = out
        row: dict[str, Any] = {"step_ms": ms, "first_call_s": first_call_s}
        row.update(
            {
                f"step_over_{k[: -len('_floor_ms')]}": round(ms / v, 3)
                for k, v in floors[label].items()
                if k.endswith("_ms")
            }
        )
        for base in ("bf16", "fp8"):
            if base != variant and base in references[label]:
                row[f"vs_{base}"] = compare(out, references[label][base])
        figures[label] = row
        log(f"{variant} {label}: {row}")
    if args.profile and "quantization" in overrides:
        first = next(iter(inputs))
        captured = capture_block_inputs(transformer, inputs[first])
        figures["block_kernels"] = {"shape": first}
        for name, (block, block_args, block_kwargs) in captured.items():
            figures["block_kernels"][name] = block_kernels(block, block_args, block_kwargs)
    figures["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench attention", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", default="random-klein-4b", help="random-klein-4b | random-klein-9b | random-dev")
    parser.add_argument("--sections", default="kernels,step", help="kernels, step (comma-separated)")
    parser.add_argument("--kernel-shapes", default=",".join(KERNEL_SHAPES), help=f"of {list(KERNEL_SHAPES)}")
    parser.add_argument("--shapes", default="1024x1024+0,1024x1024+1", help="step shapes, WxH+references")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"step variants, of {list(VARIANTS)}")
    parser.add_argument("--profile", action="store_true", help="list one compiled block's kernels per fp8 variant")
    parser.add_argument("--reps", type=int, default=20, help="timed steps per variant and shape")
    parser.add_argument("--kernel-reps", type=int, default=50, help="timed calls per attention path")
    parser.add_argument("--cache", default="/tmp/flux2-attention-cache", help="inductor cache folder")
    parser.add_argument("--json", required=True, help="where the figures go (written after every section)")
    args = parser.parse_args(argv)

    import torch

    results = Results(args.json)
    results["device"] = {"name": torch.cuda.get_device_name(), "torch": torch.__version__, "argv": argv}
    sections = args.sections.split(",")
    if "kernels" in sections:
        for name in args.kernel_shapes.split(","):
            results[f"kernels {name}"] = kernel_figures(*KERNEL_SHAPES[name], args.kernel_reps)
            log(f"kernels {name} done")
    if "step" in sections:
        step_section(args, results)


if __name__ == "__main__":
    main()
