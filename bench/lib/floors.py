"""The GPU's own floors: its matmul rates measured in the suite's process, a transformer step's FLOPs counted
without running it, and the time those FLOPs need at those rates, which every step time is set against."""

from __future__ import annotations

import functools
import statistics
from typing import TYPE_CHECKING, Any

from bench.lib.device import cuda_ok, sync
from bench.lib.timing import timed_calls

if TYPE_CHECKING:
    import torch


def matmul_ceiling(n: int = 8192, reps: int = 10, sustained: int = 300) -> dict[str, float]:
    """bf16 n^3 matmul rate on random data: ``tflops`` is the burst rate (3 warm-ups, mean of ``reps``
    timed products, ~14 ms); ``sustained_tflops`` the median of the last half of ``sustained`` products
    back to back (~0.5 s), which is what a transformer step of hundreds of ms gets: under continuous
    matmuls the H200's SM clock settles near 1500 MHz (docs/benchmarks.md)."""
    if not cuda_ok():
        return {"skipped": "no GPU"}
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    sync()
    ms = start.elapsed_time(end) / reps
    result = {"n": n, "ms": round(ms, 3), "tflops": round(2 * n**3 / (ms / 1e3) / 1e12, 1)}
    sustained_ms = statistics.median(timed_calls(functools.partial(torch.mm, a, b), sustained)[sustained // 2 :])
    result["sustained_tflops"] = round(2 * n**3 / (sustained_ms / 1e3) / 1e12, 1)
    # the fp8 rate too (rowwise-scaled _scaled_mm, as the fp8 linears use it)
    try:
        a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn).t().contiguous().t()
        sa = torch.ones(n, 1, device="cuda")
        sb = torch.ones(1, n, device="cuda")
        for _ in range(3):
            torch._scaled_mm(a8, b8, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)
        sync()
        start.record()
        for _ in range(reps):
            torch._scaled_mm(a8, b8, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)
        end.record()
        sync()
        ms8 = start.elapsed_time(end) / reps
        result["fp8_rowwise_tflops"] = round(2 * n**3 / (ms8 / 1e3) / 1e12, 1)
    except Exception as exc:
        result["fp8_error"] = repr(exc)[:300]
    del a, b
    torch.cuda.empty_cache()
    return result


def floors_ms(flops: float, ceiling: dict[str, Any]) -> dict[str, float]:
    """A step's floor at each measured matmul rate of :func:`matmul_ceiling`: ``floor_ms`` (burst) and
    ``sustained_floor_ms``; a rate that was not measured gives no floor."""
    rates = {"floor_ms": ceiling.get("tflops"), "sustained_floor_ms": ceiling.get("sustained_tflops")}
    return {key: round(flops / (rate * 1e12) * 1e3, 2) for key, rate in rates.items() if rate}


def step_inputs(
    config: dict,
    width: int,
    height: int,
    refs: int,
    *,
    text_tokens: int = 512,
    device: str = "meta",
    dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """One transformer forward's keyword arguments at this shape, as the pipelines build them (random
    values; on ``meta`` nothing is allocated). ``config`` is the transformer's config; ``dtype`` defaults to
    bfloat16."""
    import torch

    dtype = dtype or torch.bfloat16
    side_h, side_w = height // 16, width // 16
    ids = []
    for r in range(1 + refs):
        hh, ww = torch.meshgrid(torch.arange(side_h), torch.arange(side_w), indexing="ij")
        ids.append(torch.stack([torch.full_like(hh, 10 * r), hh, ww, torch.zeros_like(hh)], -1).reshape(-1, 4))
    img_ids = torch.cat(ids).unsqueeze(0)
    txt_ids = torch.zeros(1, text_tokens, 4, dtype=torch.long)
    txt_ids[..., 3] = torch.arange(text_tokens)
    with torch.device(device):
        return dict(
            hidden_states=torch.randn(1, img_ids.shape[1], config["in_channels"], dtype=dtype),
            encoder_hidden_states=torch.randn(1, text_tokens, config["joint_attention_dim"], dtype=dtype),
            timestep=torch.full((1,), 0.5, dtype=dtype),
            guidance=torch.full((1,), 4.0, dtype=dtype) if config["guidance_embeds"] else None,
            img_ids=img_ids.to(device),
            txt_ids=txt_ids.to(device),
            return_dict=False,
        )


def count_step_flops(model: torch.nn.Module, inputs: dict[str, Any]) -> dict[str, float]:
    """FLOPs of one forward (on ``meta`` nothing runs): ``matmul`` (every ``nn.Linear``, on its own
    tokens), ``attention`` (the rest: FLUX.2's transformer has no other matmuls) and their ``total``.

    Attention is counted through SDPA's math decomposition, which ``FlopCounterMode`` knows on every
    device; linears are counted from their shapes, since some dispatch as ``bmm`` like attention does.
    """
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    linear = 0

    def count_linear(module: torch.nn.Linear, args: tuple, output: torch.Tensor) -> None:
        nonlocal linear
        linear += 2 * args[0].numel() * module.out_features

    handles = [m.register_forward_hook(count_linear) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    total = float(counter.get_total_flops())
    return {"matmul": float(linear), "attention": total - linear, "total": total}


def transformer_step_flops(source: str, width: int, height: int, refs: int, text_tokens: int = 512) -> float:
    """FLOPs of one full-size transformer forward at this shape, counted on ``meta``."""
    import torch

    from deployments.engine.synthetic.random_weights import build_transformer, transformer_config

    model = build_transformer(source, device="meta", dtype=torch.bfloat16)
    inputs = step_inputs(transformer_config(source), width, height, refs, text_tokens=text_tokens)
    return count_step_flops(model, inputs)["total"]
