"""From validated OpenAI requests to engine requests, and from engine results to OpenAI responses.

Ray-free, torch-free and HTTP-free: the ingress is a thin FastAPI layer over these functions. Where a request goes
(its ``model`` and ``lora``) is resolved beside this, in ``routing.py``.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

import numpy as np

from deployments.config import Limits, ModelConfig, weights_label
from deployments.errors import InvalidRequest
from deployments.openai.images import (
    auto_size,
    decode_mask,
    encode_image,
    mask_at,
    output_quality,
    parse_size,
)
from deployments.openai.protocol import ImageParams, ModelCard, ModelLimits
from deployments.openai.references import ReferenceCache
from deployments.types import EncodedImage, ImageRequest, ImageResult, Route


def model_cards(model: ModelConfig, limits: Limits, described: dict[str, Any] | None) -> list[ModelCard]:
    """``GET /v1/models`` entries of one model: its own, then one per LoRA adapter (``<model>/<adapter>``, with
    the model as ``parent``). What the config says, then what a replica said of itself (when one has)."""
    weights = weights_label(model.source)
    adapters = model.lora
    card = ModelCard.model_validate(
        {
            "weights": weights,
            "is_demo": weights != "pretrained",
            "default_size": "{}x{}".format(*model.default_size),
            "warmup_shapes": [shape.model_dump() for shape in model.warmup_shapes],
            "limits": {key: getattr(limits, key) for key in ModelLimits.model_fields},
            "lora": {
                "adapters": [spec.name for spec in adapters.adapters],
                "max_per_request": adapters.max_per_request,
                "max_scale": adapters.max_scale,
            },
            **(described or {}),
            "id": model.served_name,
        }
    )
    own = [
        card.model_copy(update={"id": f"{card.id}/{spec.name}", "parent": card.id, "adapter": spec.name})
        for spec in adapters.adapters
    ]
    return [card, *own]


def check_params(params: ImageParams, limits: Limits) -> None:
    """Checks that depend on the configured limits or on features not offered."""
    prompt = params.prompt.strip()
    if not prompt:
        raise InvalidRequest("prompt must not be empty", param="prompt", code="invalid_value")
    if len(params.prompt) > limits.max_prompt_chars:
        raise InvalidRequest(
            f"prompt is {len(params.prompt)} characters; the limit is {limits.max_prompt_chars}",
            param="prompt",
            code="invalid_value",
        )
    if params.n > limits.max_n:
        raise InvalidRequest(f"n must be between 1 and {limits.max_n}", param="n", code="invalid_value")
    if params.num_inference_steps is not None and params.num_inference_steps > limits.max_steps:
        raise InvalidRequest(
            f"num_inference_steps must be between 1 and {limits.max_steps}",
            param="num_inference_steps",
            code="invalid_value",
        )
    if params.guidance_scale is not None and params.guidance_scale > limits.max_guidance_scale:
        raise InvalidRequest(
            f"guidance_scale must be between 0 and {limits.max_guidance_scale:g}",
            param="guidance_scale",
            code="invalid_value",
        )
    if params.response_format == "url":
        raise InvalidRequest(
            "response_format 'url' is not supported by this server; use 'b64_json'",
            param="response_format",
            code="unsupported_value",
        )
    if params.background == "transparent":
        raise InvalidRequest(
            "background 'transparent' is not supported by FLUX.2", param="background", code="unsupported_value"
        )
    if params.partial_images and not params.stream:
        raise InvalidRequest("partial_images needs stream=true", param="partial_images", code="invalid_value")


def build_generation_request(params: ImageParams, limits: Limits, target: Route) -> ImageRequest:
    check_params(params, limits)
    width, height = parse_size(params.size, limits) or target.model.default_size
    return ImageRequest(width=width, height=height, **_request_fields(params, target))


def build_edit_request(
    params: ImageParams,
    images: list[bytes],
    mask: bytes | None,
    limits: Limits,
    target: Route,
    references: ReferenceCache,
) -> ImageRequest:
    check_params(params, limits)
    if not images:
        raise InvalidRequest(
            "at least one image is required: send 'image' or 'image[]'", param="image", code="missing_image"
        )
    if len(images) > limits.max_reference_images:
        raise InvalidRequest(
            f"{len(images)} images sent; at most {limits.max_reference_images} are allowed",
            param="image",
            code="too_many_images",
        )
    param = "image" if len(images) == 1 else "image[{}]"
    arrays = tuple(references.decode(data, limits, param.format(i)) for i, data in enumerate(images))
    first_h, first_w = arrays[0].shape[:2]
    editable = decode_mask(mask, limits, (first_w, first_h)) if mask is not None else None
    width, height = parse_size(params.size, limits) or auto_size(first_w, first_h, limits)
    mask_out = mask_at(editable, width, height) if editable is not None else None
    return ImageRequest(width=width, height=height, images=arrays, mask=mask_out, **_request_fields(params, target))


def _request_fields(params: ImageParams, target: Route) -> dict[str, Any]:
    """What edits and generations pass on alike; a request without a seed gets a fresh one."""
    return {
        "prompt": params.prompt,
        "n": params.n,
        "seed": params.seed if params.seed is not None else secrets.randbelow(2**31),
        "num_inference_steps": params.num_inference_steps,
        "guidance_scale": params.guidance_scale,
        "step_cache": params.step_cache,
        "jpeg_quality": output_quality(params.output_compression) if params.output_format == "jpeg" else None,
        "adapters": target.adapters,
    }


def image_file(image: np.ndarray | EncodedImage, params: ImageParams, references: ReferenceCache) -> tuple[bytes, str]:
    """(file, "WxH") of one result image; a file the GPU already encoded passes through. A PNG is kept in
    ``references``, for an edit that sends it back."""
    if isinstance(image, EncodedImage):
        return image.data, f"{image.width}x{image.height}"
    height, width = image.shape[:2]
    file = encode_image(image, params.output_format, params.output_compression)
    if params.output_format == "png":
        references.register(file, image)
    return file, f"{width}x{height}"


def images_response(result: ImageResult, params: ImageParams, references: ReferenceCache) -> bytes:
    """The OpenAI ImagesResponse body, as JSON bytes.

    Base64 needs no JSON escaping, so each image's base64 is spliced into the JSON as bytes: the
    megabytes are never decoded to a str, scanned by the JSON encoder and encoded back (a third of
    the CPU time of ``json.dumps`` of the same body; what remains is base64 itself).
    """
    files = [image_file(image, params, references) for image in result.images]
    head = json.dumps({"created": int(time.time()), "output_format": params.output_format, "size": files[0][1]})
    parts = [head[:-1].encode(), b',"data":[']
    for index, (file, _) in enumerate(files):
        parts += [b"," if index else b"", b'{"b64_json":"', base64.b64encode(file), b'"}']
    return b"".join([*parts, b"]}"])  # one copy of the megabytes
