"""The VAE decode alone, per way of compiling it: eager, one dynamic graph (``vae_static_graphs: false``), and the
static graph of a warmed size beside the general graph every other size takes (the default), each timed at the
warmed size and the general graph at an off size, with each output's deviation from eager's.

    python -m bench vae --size 1024 --repeats 30 --json out.json

Full-size FLUX.2 VAE with random weights (bf16 on a GPU; float32 on a CPU, where the timings mean nothing).
Latents are random normal; each variant decodes the same ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import TYPE_CHECKING, Any

from bench.lib.cli import suite_parser
from bench.lib.deviation import compare
from bench.lib.device import cuda_ok
from bench.lib.results import log
from bench.lib.timing import timed_calls

if TYPE_CHECKING:
    import torch


def decode_ms(vae: torch.nn.Module, latents: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    """Median milliseconds of ``repeats`` decodes after two untimed ones (compile, then steady state)."""
    import torch

    with torch.inference_mode():
        for _ in range(2):
            out = vae.decode(latents, return_dict=False)[0]
        times = timed_calls(lambda: vae.decode(latents, return_dict=False)[0], repeats)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> None:
    parser = suite_parser("vae", __doc__)
    parser.add_argument("--size", type=int, default=1024, help="the warmed output side, pixels")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    run(args)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from deployments.engine.synthetic.random_weights import build_vae
    from deployments.engine.vae import compile_decoder, warm_general_decode

    device, dtype = ("cuda", torch.bfloat16) if cuda_ok() else ("cpu", torch.float32)
    vae = build_vae(device=device, dtype=dtype)
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    side, off = args.size // scale, args.size // scale + 2
    generator = torch.Generator(device).manual_seed(0)
    warm = torch.randn(1, vae.config.latent_channels, side, side, device=device, dtype=dtype, generator=generator)
    other = torch.randn(1, vae.config.latent_channels, off, side, device=device, dtype=dtype, generator=generator)
    result: dict[str, Any] = {"size": args.size, "off_size": [side * scale, off * scale], "device": device, "rows": []}

    eager_ms, eager_warm = decode_ms(vae, warm, args.repeats)
    _, eager_other = decode_ms(vae, other, args.repeats)
    result["rows"].append({"variant": "eager", "warm_ms": round(eager_ms, 2)})
    log(f"eager: {eager_ms:.2f} ms")
    for variant, sizes in (("dynamic", []), ("static + general", [(args.size, args.size)])):
        torch._dynamo.reset()
        vars(vae.decoder).pop("forward", None)  # the plain decoder again
        compile_decoder(vae, sizes, {"fullgraph": True})
        warm_general_decode(vae)
        warm_ms, warm_out = decode_ms(vae, warm, args.repeats)
        other_ms, other_out = decode_ms(vae, other, args.repeats)
        row = {
            "variant": variant,
            "warm_ms": round(warm_ms, 2),
            "off_size_ms": round(other_ms, 2),
            "warm_vs_eager": compare(warm_out, eager_warm),
            "off_size_vs_eager": compare(other_out, eager_other),
        }
        result["rows"].append(row)
        log(f"{variant}: {warm_ms:.2f} ms at {args.size}², {other_ms:.2f} ms off-size, {row['warm_vs_eager']}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=1)
    return result
