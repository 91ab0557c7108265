"""Attention on this GPU: raw SDPA kernel rates, and the transformer step per diffusers backend.

    python -m bench.attention_backends --source random-klein-4b --json out.json

First each SDPA kernel (flash, cuDNN, memory-efficient) alone at FLUX.2's 1024² attention shapes, in
TFLOP/s beside the bf16 matmul ceiling measured in the same run: how far attention is from the rate
the linears reach. Then one forward of the transformer at 1024² text-to-image shapes (512 text
tokens), timed with CUDA events (median of ``--reps`` after two warm-ups), for each backend.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench.common import elapsed_ms, mark, matmul_ceiling, sync
from deployments.engine.synthetic.random_weights import build_transformer

BACKENDS = ("native", "_native_cudnn", "_native_flash", "_native_efficient")
KERNELS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
}
# (heads, tokens) of one attention call at 1024²: 512 text tokens + 4096 image tokens (+ 4096 a reference)
SHAPES = {
    "klein-4b t2i": (24, 4608),
    "klein-4b edit1": (24, 8704),
    "dev t2i": (48, 4608),
    "dev edit1": (48, 8704),
}


def kernel_rates(reps: int) -> dict:
    """TFLOP/s of each SDPA kernel alone (forward, bf16, head dim 128, no mask)."""
    rates: dict = {}
    for name, (heads, tokens) in SHAPES.items():
        q, k, v = (torch.randn(1, heads, tokens, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        flops = 4 * heads * tokens * tokens * 128
        rates[name] = {}
        for kernel, backend in KERNELS.items():
            try:
                with sdpa_kernel(backend), torch.inference_mode():
                    for _ in range(3):
                        torch.nn.functional.scaled_dot_product_attention(q, k, v)
                    start = mark()
                    for _ in range(reps):
                        torch.nn.functional.scaled_dot_product_attention(q, k, v)
                    end = mark()
                    sync()
                ms = elapsed_ms(start, end) / reps
                rates[name][kernel] = {"ms": round(ms, 3), "tflops": round(flops / ms / 1e9, 1)}
            except Exception as exc:  # a kernel this GPU or build lacks
                rates[name][kernel] = {"error": repr(exc)[:200]}
        print(name, rates[name], flush=True)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", default="random-klein-4b")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    figures: dict = {"matmul_ceiling": matmul_ceiling(), "sdpa_kernels": kernel_rates(args.reps)}
    print("ceiling", figures["matmul_ceiling"], flush=True)
    transformer = build_transformer(args.source, device="cuda", dtype=torch.bfloat16).eval()
    config = transformer.config
    grid = args.size // 16
    zero, span = torch.zeros(1, dtype=torch.long), torch.arange(grid)
    image_ids = torch.cartesian_prod(zero, span, span, zero)
    text_ids = torch.cartesian_prod(zero, zero, zero, torch.arange(512))
    inputs = {
        "hidden_states": torch.randn(1, grid * grid, config.in_channels, device="cuda", dtype=torch.bfloat16),
        "encoder_hidden_states": torch.randn(1, 512, config.joint_attention_dim, device="cuda", dtype=torch.bfloat16),
        "timestep": torch.full((1,), 0.5, device="cuda"),
        "img_ids": image_ids.to("cuda"),
        "txt_ids": text_ids.to("cuda"),
        "guidance": torch.full((1,), 4.0, device="cuda") if config.guidance_embeds else None,
        "return_dict": False,
    }
    figures.update({"source": args.source, "size": args.size, "tokens": grid * grid + 512, "ms": {}})
    reference = None
    for backend in BACKENDS:
        try:
            transformer.set_attention_backend(backend)
            times = []
            with torch.inference_mode():
                for i in range(args.reps + 2):
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    out = transformer(**inputs)[0]
                    end.record()
                    torch.cuda.synchronize()
                    if i >= 2:
                        times.append(start.elapsed_time(end))
            reference = out.float() if reference is None else reference
            cosine = torch.nn.functional.cosine_similarity(out.float().flatten(), reference.flatten(), dim=0)
            figures["ms"][backend] = {"median": round(statistics.median(times), 2), "cosine_vs_native": float(cosine)}
        except Exception as exc:  # a backend this GPU or build lacks
            figures["ms"][backend] = {"error": repr(exc)[:200]}
        print(backend, figures["ms"][backend], flush=True)
    with open(args.json, "w") as handle:
        json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
