"""LoRA files for the adapter tests, made offline: random weights for the tiny FLUX.2 transformer, written in the
formats people publish for FLUX.2.

- diffusers/PEFT: a PEFT adapter with random weights, saved by diffusers' own ``save_lora_weights``
  (``transformer.<module>.lora_A.weight`` keys and PEFT's LoraConfig as safetensors metadata);
- kohya: ``lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`` names with fused QKV and ``.alpha``
  keys, plus the diffusers-key file holding the same weights, as diffusers' converter splits them.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from diffusers import Flux2KleinPipeline
from peft import LoraConfig
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

DIFFUSERS_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "linear_in", "to_qkv_mlp_proj", "proj_out")

# kohya name -> the diffusers modules it fuses (their outputs concatenated), for the tiny transformer's blocks
KOHYA_MODULES = {
    "lora_unet_double_blocks_0_img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "lora_unet_double_blocks_0_img_attn_proj": ("attn.to_out.0",),
    "lora_unet_double_blocks_0_txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "lora_unet_double_blocks_0_txt_attn_proj": ("attn.to_add_out",),
    "lora_unet_double_blocks_0_img_mlp_0": ("ff.linear_in",),
    "lora_unet_double_blocks_0_img_mlp_2": ("ff.linear_out",),
    "lora_unet_double_blocks_0_txt_mlp_0": ("ff_context.linear_in",),
    "lora_unet_double_blocks_0_txt_mlp_2": ("ff_context.linear_out",),
    "lora_unet_single_blocks_0_linear1": ("attn.to_qkv_mlp_proj",),
    "lora_unet_single_blocks_0_linear2": ("attn.to_out",),
}


def save_peft_lora(
    transformer: torch.nn.Module,
    folder: Path,
    *,
    seed: int,
    rank: int = 4,
    alpha: float = 4,
    relative_norm: float | None = None,
    **config: object,
) -> Path:
    """A random PEFT adapter on ``DIFFUSERS_TARGETS`` saved with diffusers' keys and metadata; ``config`` goes to
    LoraConfig (``rank_pattern``, ``alpha_pattern``, ...). ``transformer`` is copied, not changed.

    PEFT's random init (``init_lora_weights=False``) makes ||BA|| about 0.6 ||W|| on every layer (times alpha / r
    in effect), far over a trained LoRA's 1-5 %; ``relative_norm`` rescales each B to give that ratio instead."""
    model = copy.deepcopy(transformer)
    torch.manual_seed(seed)
    lora = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=list(DIFFUSERS_TARGETS), init_lora_weights=False, **config
    )
    model.add_adapter(lora, adapter_name="trained")
    if relative_norm is not None:
        _set_relative_norm(model, "trained", relative_norm)
    Flux2KleinPipeline.save_lora_weights(
        folder,
        transformer_lora_layers=get_peft_model_state_dict(model, adapter_name="trained"),
        transformer_lora_adapter_metadata=lora.to_dict(),
    )
    return folder / "pytorch_lora_weights.safetensors"


def _set_relative_norm(model: torch.nn.Module, adapter: str, ratio: float) -> None:
    """Scale every B of ``adapter`` so that its layer's alpha / r * ||BA||_F is ``ratio`` * ||W||_F."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, LoraLayer) and adapter in layer.lora_A:
                down, up = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
                delta = layer.scaling[adapter] * torch.linalg.matrix_norm(up @ down)
                up.mul_(ratio * torch.linalg.matrix_norm(layer.get_base_layer().weight) / delta)


def save_kohya_lora(transformer: torch.nn.Module, folder: Path, *, seed: int, rank: int = 6) -> tuple[Path, Path]:
    """A random kohya-named adapter (alpha = rank / 2) and the diffusers-key file with the same weights: kohya's
    shared down matrix of a fused layer on each part, the up matrix split by output, alpha / rank folded in."""
    generator = torch.Generator().manual_seed(seed)
    kohya, diffusers = {}, {}
    for kohya_name, parts in KOHYA_MODULES.items():
        block = "single_transformer_blocks.0." if "single" in kohya_name else "transformer_blocks.0."
        modules = [transformer.get_submodule(block + part) for part in parts]
        down = torch.randn(rank, modules[0].in_features, generator=generator) / 4
        up = torch.randn(sum(m.out_features for m in modules), rank, generator=generator) / 4
        kohya |= {f"{kohya_name}.lora_down.weight": down, f"{kohya_name}.lora_up.weight": up}
        kohya[f"{kohya_name}.alpha"] = torch.tensor(rank / 2)
        for part, chunk in zip(parts, up.split([m.out_features for m in modules]), strict=True):
            diffusers[f"transformer.{block}{part}.lora_A.weight"] = down * 0.5
            diffusers[f"transformer.{block}{part}.lora_B.weight"] = chunk.contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(kohya, folder / "kohya.safetensors")
    save_file(diffusers, folder / "kohya_as_diffusers.safetensors")
    return folder / "kohya.safetensors", folder / "kohya_as_diffusers.safetensors"
