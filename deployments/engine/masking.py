"""Masked edits for every FLUX.2 family: latent-space masked denoising plus a feathered pixel composite.

Request semantics (OpenAI ``mask``): the mask marks what may change in the FIRST reference image, the image
being edited. It arrives as ``ImageRequest.mask``, bool at the output size (the ingress brought it there); the
output may have another size than the source, so the source is resized to the output size first.

Method, the same for dev and klein:

1. **Latent space.** The source (first reference, resized to the output size) is encoded once with
   the pipeline's own VAE path (patchify + batch-norm, then packed to tokens): ``x0``. The initial
   noise is drawn here, with the same generators and shape the pipeline would use, and passed in as
   ``latents=`` so the same ``noise`` can re-noise the source. After every scheduler step a
   ``callback_on_step_end`` replaces the kept region by the source on the flow-matching path at the
   sigma the latents are now at::

       x_sigma = (1 - sigma) * x0 + sigma * noise
       latents = w * latents + (1 - w) * x_sigma

   ``w`` is the mask on the packed latent grid (one token per 16x16 pixels): a token is editable if
   any pixel of its cell is, then the edge is feathered outward by a Gaussian so the model sees a soft
   transition instead of a hard step in the token grid. At the last step sigma is 0, so the kept
   tokens are exactly the source's latents. The transformer still sees every reference image
   (including the source) as usual, so the edit is conditioned on the whole picture and generated
   content in the mask is denoised jointly with the kept surroundings: that is what removes seams.

2. **Pixel space.** The VAE round trip is lossy, so the decoded image is composited over the source
   with a feathered mask ``alpha = m * clip(2 * blur(m) - 1, 0, 1)``: alpha is exactly 0 outside the
   mask (the output equals the input there, bit for bit) and ramps to 1 over ``feather_px`` pixels
   inside it, so the boundary blends.

Why not ``Flux2KleinInpaintPipeline`` for klein (diffusers 0.42.1)? Its denoising loop does the same
thing as step 1 (re-noise the source with fixed noise after each step, blend with the mask on the
packed grid), so it brings no extra quality, and it does not fit this service's request semantics:
it forces the output to the source image's size (``height``/``width`` are overridden), accepts one
``image_reference`` batch rather than a list of differently sized references, always encodes the
source at output size as a reference (a different sequence length from the plain pipeline, so
compiled shapes would differ from the warmed ones), binarises the mask without feathering, exists
for klein only, and needs a second pipeline object. One callback on the pipelines already loaded
covers dev and klein with one code path and one set of tests (the blender also runs unchanged on
``Flux2KleinKVPipeline``; that pipeline takes no ``guidance_scale``, so the engine passes ``None``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from deployments.engine.conditioning import Conditioning
from deployments.engine.pipeline_call import StepCallback, call_pipeline, decode_latents, seed_generators
from deployments.engine.pixels import to_uint8
from deployments.engine.progress import chain
from deployments.errors import InvalidRequest
from deployments.types import ImageRequest

LATENT_FEATHER_CELLS = 1.0  # Gaussian sigma of the outward feather, in packed latent cells (16 px each)


def default_feather_px(width: int, height: int) -> int:
    """Width of the pixel-space blend band: 16 px at 1024², never under 2 px."""
    return max(2, round(min(width, height) / 64))


def resize_source(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The first reference image at the output size (uint8, (H, W, 3))."""
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS), dtype=np.uint8)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (N, 1, H, W) tensor, edges replicated."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))


def pixel_alpha(mask: np.ndarray, feather_px: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Composite weights (H, W) in [0, 1]: 0 outside the mask, ramping to 1 over ``feather_px`` inside it."""
    m = torch.from_numpy(mask).to(device)[None, None]
    blurred = gaussian_blur(m, feather_px / 2.0)
    return (m * (2.0 * blurred - 1.0).clamp(0.0, 1.0))[0, 0]


def latent_weights(
    mask: np.ndarray, grid_h: int, grid_w: int, feather_cells: float = LATENT_FEATHER_CELLS
) -> torch.Tensor:
    """Editable weight per packed latent token, (grid_h * grid_w,) in row-major token order.

    A cell with any editable pixel is fully editable; the edge then fades outward (Gaussian).
    """
    m = torch.from_numpy(mask)[None, None]
    covered = F.adaptive_max_pool2d(m, (grid_h, grid_w))
    soft = torch.maximum(covered, gaussian_blur(covered, feather_cells))
    return soft.flatten()


class LatentMaskBlender:
    """``callback_on_step_end`` that pins the kept tokens to the re-noised source latents.

    ``source`` and ``noise`` are packed (B, tokens, C); ``weights`` is (tokens,), 1 = editable.
    """

    def __init__(self, source: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor):
        self.source = source.float()
        self.noise = noise.float()
        self.weights = weights.to(source.device, torch.float32).view(1, -1, 1)
        self.last: torch.Tensor | None = None  # the latents after the latest step (for inspection)

    def __call__(self, pipeline, step: int, timestep, callback_kwargs: dict) -> dict:
        latents = callback_kwargs["latents"]
        scheduler = pipeline.scheduler
        sigma = scheduler.sigmas[scheduler.step_index].to(latents.device, torch.float32)  # the sigma latents are at
        kept = (1.0 - sigma) * self.source + sigma * self.noise
        blended = self.weights * latents.float() + (1.0 - self.weights) * kept
        self.last = blended.to(latents.dtype)
        return {"latents": self.last}


def encode_source(pipeline, source: np.ndarray) -> torch.Tensor:
    """Normalised VAE latents of ``source`` (1, C, h, w), exactly as the pipeline encodes images."""
    height, width = source.shape[:2]
    pixels = pipeline.image_processor.preprocess(Image.fromarray(source), height=height, width=width)
    vae = pipeline.vae
    pixels = pixels.to(device=vae.device, dtype=vae.dtype)
    return pipeline._encode_vae_image(image=pixels, generator=None)  # argmax of the posterior: deterministic


def vae_round_trip(pipeline, source: np.ndarray) -> np.ndarray:
    """``source`` encoded and decoded by the pipeline's VAE: the best the latent stage alone can keep."""
    with torch.inference_mode():
        latents = pipeline._encode_vae_image(
            image=pipeline.image_processor.preprocess(Image.fromarray(source)).to(
                pipeline.vae.device, pipeline.vae.dtype
            ),
            generator=None,
        )
        decoded = pipeline.image_processor.postprocess(decode_latents(pipeline, latents), output_type="pt")
    return to_uint8(decoded)[0]


def prepare_latent_blend(
    pipeline, source_latents: torch.Tensor, mask: np.ndarray, generators: list[torch.Generator]
) -> tuple[torch.Tensor, LatentMaskBlender]:
    """The initial noise to pass as ``latents=`` (unpacked, (B, C, h, w)) and the step callback, for the source's
    latents (:func:`encode_source`) and the mask at the output size.

    The noise has the shape, generators and draw order of the pipeline's own ``prepare_latents``, so a
    masked edit starts from the same noise as the unmasked edit with the same seed.
    """
    height, width = mask.shape
    multiple = pipeline.vae_scale_factor * 2
    grid_h, grid_w = height // multiple, width // multiple
    device = pipeline._execution_device
    channels = pipeline.transformer.config.in_channels
    noise = randn_tensor(
        (len(generators), channels, grid_h, grid_w),
        generator=generators,
        device=device,
        dtype=pipeline.transformer.dtype,
    )
    blender = LatentMaskBlender(
        pipeline._pack_latents(source_latents).repeat(len(generators), 1, 1).to(device),
        pipeline._pack_latents(noise),
        latent_weights(mask, grid_h, grid_w),
    )
    return noise, blender


def run_masked_edit(
    pipeline,
    request: ImageRequest,
    steps: int,
    guidance: float | None,
    conditioning: Conditioning,
    *,
    feather_px: float | None = None,
    composite: bool = True,
    step_callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run ``request`` (which has a mask) on a Flux2Pipeline / Flux2KleinPipeline; (n, 3, H, W) floats in
    [0, 1] on the pipeline's device.

    ``composite=False`` returns the decoded latent-space result without the pixel composite (for
    measuring the latent stage alone). The source's latents are kept in ``conditioning``'s latent cache, by the
    first reference's pixels and the output size.
    """
    if request.mask is None or not request.images:
        raise InvalidRequest("a mask needs an image to edit", param="mask", code="invalid_mask")
    width, height = request.width, request.height
    source = resize_source(request.images[0], width, height)
    mask = request.mask.astype(np.float32)  # 1 = editable, for the blends' arithmetic
    keys = conditioning.reference_keys(request.images)

    generators = seed_generators([request])
    with torch.inference_mode():
        encode = functools.partial(encode_source, pipeline, source)
        latents = conditioning.source_latents(("source", keys[0], width, height), encode) if keys else encode()
        noise, blender = prepare_latent_blend(pipeline, latents, mask, generators)
    callback = chain([blender, step_callback])
    generated = call_pipeline(
        pipeline,
        [request],
        steps,
        guidance,
        generators,
        conditioning,
        reference_keys=keys,
        latents=noise,
        callback=callback,
    )
    with torch.inference_mode():
        # Composite on the pipeline's device (at 1024² the blur costs ~0.1 s on one CPU core).
        generated = generated.float()  # (n, 3, H, W) in [0, 1]
        if composite:
            feather = default_feather_px(width, height) if feather_px is None else feather_px
            alpha = pixel_alpha(mask, feather, generated.device)
            kept = torch.tensor(source, device=generated.device).permute(2, 0, 1).float() / 255.0
            generated = alpha * generated + (1.0 - alpha) * kept  # alpha is exactly 0 outside: kept bit for bit
    return generated
