"""Is compiling the VAE decoder a numerical change beyond bf16's own? Decodes the same random latents with
the eager bf16 decoder, the compiled bf16 decoder and an eager float32 copy (the reference), and prints
each bf16 variant's relative L2 error and cosine to float32.

    python -m bench.vae_precision --source random-klein-4b --size 1024
"""

from __future__ import annotations

import argparse
import copy
import json

import torch

from bench.common import compare
from deployments.config import ModelConfig
from deployments.engine.load import load_pipeline


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", default="random-klein-4b")
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    vae = load_pipeline(ModelConfig(source=args.source)).pipeline.vae
    reference = copy.deepcopy(vae).float()
    side = args.size // 8
    generator = torch.Generator(vae.device).manual_seed(0)
    channels = vae.config.latent_channels
    latents = torch.randn(1, channels, side, side, device=vae.device, generator=generator)
    with torch.inference_mode():
        want = reference.decode(latents, return_dict=False)[0]
        eager = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
        vae.decoder.compile(fullgraph=True)
        compiled = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
    rows = {
        "eager_bf16_vs_fp32": compare(eager.float(), want),
        "compiled_bf16_vs_fp32": compare(compiled.float(), want),
        "compiled_vs_eager_bf16": compare(compiled.float(), eager.float()),
    }
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
