"""Random LoRA adapter files for a model source, in diffusers' format: a demo adapter to try LoRA on the tiny
model, and the adapters a GPU soak serves. No weights and no GPU are needed: a full-size transformer's shapes come
from building it on ``meta``.

    python -m deployments.engine.synthetic.random_adapters outputs/adapters --source tiny-dev --names demo
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def save_random_adapter(layers: dict[str, Any], folder: Path, rank: int, generator: torch.Generator) -> Path:
    """One random rank-``rank`` adapter on ``layers`` (module name -> a layer with ``in_features`` and
    ``out_features``), drawn on ``generator``'s device and saved in ``folder`` with diffusers' keys and PEFT's
    LoraConfig (alpha = rank: scale 1). B is small, as trained adapters' are: on nn.Linear's init (the random
    models'), ||BA|| / ||W||, and a layer's output change on random inputs, are 0.02 * sqrt(3) = 3.5 % at any width
    and rank; the rank-64 one moved klein-4B's image by rel. L2 0.069."""
    import torch
    from diffusers.loaders.lora_pipeline import Flux2LoraLoaderMixin
    from peft import LoraConfig

    weights = {}
    for name, layer in layers.items():
        down = torch.randn(rank, layer.in_features, generator=generator, device=generator.device)
        up = torch.randn(layer.out_features, rank, generator=generator, device=generator.device)
        weights[f"{name}.lora_A.weight"] = (down / layer.in_features**0.5).to(torch.bfloat16).cpu()
        weights[f"{name}.lora_B.weight"] = (up * 0.02 / rank**0.5).to(torch.bfloat16).cpu()
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=sorted(layers))
    Flux2LoraLoaderMixin.save_lora_weights(
        folder, transformer_lora_layers=weights, transformer_lora_adapter_metadata=config.to_dict()
    )
    return folder


def write_adapters(source: str, folder: Path, names: list[str], rank: int) -> list[Path]:
    """Random rank-``rank`` LoRA files, one folder per name, on every linear layer of ``source``'s transformer
    (tiny sources: their transformer built for real; others on ``meta``)."""
    import torch

    from deployments.engine.synthetic.random_weights import build_transformer
    from deployments.engine.synthetic.tiny import TINY_BUILDERS

    if source in TINY_BUILDERS:
        transformer = TINY_BUILDERS[source]().transformer
    else:
        transformer = build_transformer(source, device="meta")
    linears = {name: module for name, module in transformer.named_modules() if isinstance(module, torch.nn.Linear)}
    return [
        save_random_adapter(linears, folder / name, rank, torch.Generator().manual_seed(seed))
        for seed, name in enumerate(names, start=1)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deployments.engine.synthetic.random_adapters", description=__doc__)
    parser.add_argument("folder", type=Path, help="one folder per adapter is written here")
    parser.add_argument(
        "--source", default="tiny-dev", help="the model the adapters fit (tiny-dev, random-klein-4b...)"
    )
    parser.add_argument("--names", default="demo", help="adapter names, comma-separated")
    parser.add_argument("--rank", type=int, default=4)
    args = parser.parse_args(argv)
    for path in write_adapters(args.source, args.folder, [n for n in args.names.split(",") if n], args.rank):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
