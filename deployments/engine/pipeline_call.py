"""What the engine asks of a FLUX.2 pipeline: the one pipeline call, the seeds, and decoding latents.

Plain and masked requests go through the same call with the same arguments; a masked edit only adds its
initial noise and a step callback (``deployments.engine.masking``). Prompt embeddings and reference latents come
from the engine's caches (``deployments.engine.conditioning``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from deployments.engine.conditioning import Conditioning
from deployments.types import ImageRequest

StepCallback = Callable[[Any, int, Any, dict], dict]  # diffusers' callback_on_step_end


def seed_generators(requests: list[ImageRequest]) -> list[torch.Generator]:
    """One generator per image: image i of a request starts from the noise of ``seed + i``."""
    return [torch.Generator("cpu").manual_seed(request.seed + i) for request in requests for i in range(request.n)]


def call_pipeline(
    pipeline: Any,
    requests: list[ImageRequest],
    steps: int,
    guidance: float | None,
    generators: list[torch.Generator],
    conditioning: Conditioning,
    *,
    reference_keys: Sequence[bytes] = (),
    latents: torch.Tensor | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run ``requests`` (one, or text-to-image requests of one shape) in one call: (N, 3, H, W) floats in [0, 1].

    ``guidance`` is None for pipelines that take none (the reference-KV klein pipeline). The prompts go in as
    embeddings and the references through ``conditioning``'s caches (``reference_keys``: its keys of the first
    request's images, none to leave them uncached).
    """
    first = requests[0]
    with conditioning.references(first.images, reference_keys) as images, torch.inference_mode():
        output = pipeline(
            image=images or None,
            **conditioning.prompt_kwargs(requests),
            height=first.height,
            width=first.width,
            num_inference_steps=steps,
            **({} if guidance is None else {"guidance_scale": guidance}),
            generator=generators,
            latents=latents,
            output_type="pt",
            callback_on_step_end=callback,
            callback_on_step_end_tensor_inputs=["latents"],
        )
    return output.images


def decode_latents(pipeline: Any, latents: torch.Tensor) -> torch.Tensor:
    """Normalised, patchified latents (B, C, h, w), as the pipeline keeps them, to VAE output in [-1, 1].

    The end of the FLUX.2 pipelines: undo the latent batch-norm, un-patchify, decode.
    """
    bn = pipeline.vae.bn
    mean = bn.running_mean.view(1, -1, 1, 1).to(latents.device, latents.dtype)
    std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + pipeline.vae.config.batch_norm_eps).to(latents)
    unpatchified = pipeline._unpatchify_latents(latents * std + mean).to(pipeline.vae.dtype)
    return pipeline.vae.decode(unpatchified, return_dict=False)[0]
