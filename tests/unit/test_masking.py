"""Masked edits on the tiny offline pipelines of both FLUX.2 families (real diffusers, CPU, no mocks)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from deployments.config import ModelConfig
from deployments.engine import Flux2Engine
from deployments.engine.masking import (
    encode_source,
    latent_weights,
    pixel_alpha,
    prepare_latent_blend,
    resize_source,
)
from deployments.openai.images import mask_at
from deployments.types import ImageRequest

PROMPT = "replace the cat with a dog"


def source_image(width: int = 80, height: int = 96) -> np.ndarray:
    """A smooth gradient with a disc: structure a random VAE cannot reproduce, so kept pixels are telling."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([255 * x / width, 255 * y / height, 128 + 60 * np.sin(x / 7.0)], axis=-1)
    disc = (x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(width, height) / 4) ** 2
    image[disc] = (230, 140, 40)
    return image.astype(np.uint8)


def rect_mask(width: int = 80, height: int = 96) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = True
    return mask


def psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    diff = a.astype(np.float64)[region] - b.astype(np.float64)[region]
    mse = float(np.mean(diff**2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module", params=["tiny-dev", "tiny-klein"])
def engine(request: pytest.FixtureRequest) -> Flux2Engine:
    return Flux2Engine.from_config(ModelConfig(source=request.param))


@pytest.mark.parametrize("size", [(80, 96), (128, 64)], ids=["same-size", "other-size"])
def test_outside_kept_inside_changed(engine: Flux2Engine, size: tuple[int, int]) -> None:
    width, height = size
    image = source_image()  # 80x96, as the mask the client drew on it, whatever the output size
    editable = mask_at(rect_mask(), width, height)
    result = engine.generate(
        ImageRequest(
            prompt=PROMPT,
            width=width,
            height=height,
            images=(image,),
            mask=editable,
            seed=3,
            n=2,
            num_inference_steps=2,
        )
    )
    assert result.mask_applied
    expected = resize_source(image, width, height)
    for output in result.images:
        assert output.shape == (height, width, 3) and output.dtype == np.uint8
        assert psnr(output, expected, ~editable) >= 35.0
        assert psnr(output, expected, editable) < 25.0  # the edit did happen inside


def test_unmasked_request_is_not_flagged_and_differs(engine: Flux2Engine) -> None:
    image = source_image()
    plain = engine.generate(
        ImageRequest(prompt=PROMPT, width=80, height=96, images=(image,), seed=3, num_inference_steps=2)
    )
    assert not plain.mask_applied
    editable = rect_mask()
    assert psnr(plain.images[0], image, ~editable) < 35.0  # without a mask the tiny model changes everything


def test_a_mask_has_one_representation() -> None:
    """Bool at the output size, made once in the ingress: the 255/0 of the decoder or another size is refused."""
    for mask in (rect_mask(64, 64).astype(np.uint8) * 255, rect_mask(80, 64)):
        with pytest.raises(ValueError, match="mask must be bool of the output's shape"):
            ImageRequest(prompt=PROMPT, width=64, height=64, images=(source_image(64, 64),), mask=mask)


def test_masked_edit_is_deterministic(engine: Flux2Engine) -> None:
    request = ImageRequest(
        prompt=PROMPT,
        width=64,
        height=64,
        images=(source_image(64, 64),),
        mask=rect_mask(64, 64),
        num_inference_steps=2,
    )
    assert np.array_equal(engine.generate(request).images[0], engine.generate(request).images[0])


def test_kept_tokens_end_exactly_on_source_latents(engine: Flux2Engine) -> None:
    """The latent stage alone: after the last step (sigma 0) every kept token is the source's latent."""
    pipeline = engine.pipeline
    image = source_image(128, 128)
    mask = np.zeros((128, 128), dtype=np.float32)
    mask[8:40, 8:40] = 1  # latent cells 0..2 of an 8x8 grid; cells 6 and 7 are beyond the feather
    generators = [torch.Generator("cpu").manual_seed(0)]
    with torch.inference_mode():
        noise, blender = prepare_latent_blend(pipeline, encode_source(pipeline, image), mask, generators)
        pipeline(
            image=[Image.fromarray(image)],
            prompt=PROMPT,
            height=128,
            width=128,
            num_inference_steps=3,
            generator=generators,
            latents=noise,
            callback_on_step_end=blender,
            output_type="latent",
        )
    kept = blender.weights.view(-1) == 0
    edited = blender.weights.view(-1) == 1
    assert kept.any() and edited.any()
    assert torch.equal(blender.last[:, kept], blender.source[:, kept].to(blender.last.dtype))
    assert not torch.allclose(blender.last[:, edited], blender.source[:, edited].to(blender.last.dtype))


def test_pixel_alpha_is_zero_outside_and_feathered_inside() -> None:
    mask = rect_mask(64, 64).astype(np.float32)
    alpha = pixel_alpha(mask, feather_px=6).numpy()
    assert np.all(alpha[mask == 0] == 0)
    assert alpha[32, 32] == pytest.approx(1.0, abs=1e-4)  # deep inside
    band = alpha[(mask == 1) & (alpha < 0.99)]
    assert band.size and band.max() > 0.1  # a ramp, not a step


def test_latent_weights_cover_the_mask_and_fade_outward() -> None:
    mask = np.zeros((64, 64), dtype=np.float32)
    mask[20:40, 20:40] = 1  # touches latent cells 1..2 of a 4x4 grid
    weights = latent_weights(mask, 4, 4).view(4, 4)
    assert torch.all(weights[1:3, 1:3] == 1)
    assert 0 < weights[0, 1] < 1 and 0 < weights[3, 3] < 1
    lone = np.zeros((128, 128), dtype=np.float32)
    lone[0:8, 0:8] = 1
    assert latent_weights(lone, 8, 8).view(8, 8)[7, 7] == 0  # far tokens are kept exactly


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_openai_mask_png_through_the_request_builder(engine: Flux2Engine) -> None:
    """The ingress's parsing (alpha 0 = editable, PNG bytes) into the engine; the output has another size.

    (Over real HTTP the same path answers with ``x-mask-applied: true``; that needs the Ray fixture, too
    slow for this file on a small CPU.)"""
    from deployments.config import Limits
    from deployments.openai.protocol import parse_form_fields
    from deployments.openai.references import ReferenceCache
    from deployments.openai.serving import build_edit_request
    from deployments.types import Route

    image, mask = source_image(), rect_mask()
    alpha = np.where(mask, 0, 255).astype(np.uint8)
    rgba = np.dstack([np.full_like(alpha, 255), np.zeros_like(alpha), np.zeros_like(alpha), alpha])
    params = parse_form_fields({"prompt": PROMPT, "size": "128x64", "seed": "5", "num_inference_steps": "2"})
    request = build_edit_request(params, [_png(image)], _png(rgba), Limits(), Route(ModelConfig()), ReferenceCache(8))
    result = engine.generate(request)
    assert result.mask_applied
    output = result.images[0]
    assert output.shape == (64, 128, 3)
    editable = mask_at(mask, 128, 64)
    assert psnr(output, resize_source(image, 128, 64), ~editable) >= 35.0
    assert psnr(output, resize_source(image, 128, 64), editable) < 25.0
