"""Random LoRA adapter files for a model source, in diffusers' format: a demo adapter to try LoRA on the tiny
model, and the adapters a GPU soak serves. No weights and no GPU are needed: a full-size transformer's shapes come
from building it on ``meta``.

    python -m deployments.engine.synthetic.random_adapters outputs/adapters --source tiny-dev --names demo
"""

from __future__ import annotations

import argparse
from pathlib import Path


def write_adapters(source: str, folder: Path, names: list[str], rank: int) -> list[Path]:
    """Random rank-``rank`` LoRA files, one folder per name, on every linear layer of ``source``'s transformer,
    with diffusers' keys and PEFT's LoraConfig (tiny sources: their transformer built for real)."""
    import torch
    from diffusers.loaders.lora_pipeline import Flux2LoraLoaderMixin
    from peft import LoraConfig

    from deployments.engine.synthetic.random_weights import build_transformer
    from deployments.engine.synthetic.tiny import TINY_BUILDERS

    if source in TINY_BUILDERS:
        transformer = TINY_BUILDERS[source]().transformer
    else:
        transformer = build_transformer(source, device="meta")
    linears = {name: module for name, module in transformer.named_modules() if isinstance(module, torch.nn.Linear)}
    folders = []
    for seed, name in enumerate(names, start=1):
        generator = torch.Generator().manual_seed(seed)
        weights = {}
        for module_name, layer in linears.items():
            down = torch.randn(rank, layer.in_features, generator=generator) / layer.in_features**0.5
            up = torch.randn(layer.out_features, rank, generator=generator) * 0.02 / rank**0.5
            weights |= {f"{module_name}.lora_A.weight": down, f"{module_name}.lora_B.weight": up}
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=sorted(linears))
        Flux2LoraLoaderMixin.save_lora_weights(
            folder / name,
            transformer_lora_layers={key: value.to(torch.bfloat16) for key, value in weights.items()},
            transformer_lora_adapter_metadata=config.to_dict(),
        )
        folders.append(folder / name)
    return folders


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
