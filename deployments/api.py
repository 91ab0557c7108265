"""The OpenAI Images API surface: typed request models, validation into ImageRequest, responses.

Ray-free and torch-free; the ingress deployment is a thin FastAPI layer over these functions.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deployments.config import Limits
from deployments.images import auto_size, decode_image, decode_mask, encode_image, output_quality, parse_size, to_b64
from deployments.protocol import EncodedImage, ImageRequest, ImageResult, PartialImage, ServiceError, StepProgress

MAX_SEED = 2**62


class ImageParams(BaseModel):
    """Fields shared by ``/v1/images/generations`` and ``/v1/images/edits``.

    Standard OpenAI fields, plus the extensions ``seed``, ``num_inference_steps`` and ``guidance_scale``.
    OpenAI fields that FLUX.2 has no use for (``quality``, ``moderation``, ``user``, ``input_fidelity``)
    are accepted and ignored, as the README lists; unknown fields are rejected.
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str
    model: str | None = None
    n: int = Field(default=1, ge=1)
    size: str | None = "auto"
    output_format: Literal["png", "jpeg", "webp"] = "png"
    output_compression: int | None = Field(default=None, ge=0, le=100)
    response_format: Literal["b64_json", "url"] | None = None
    background: Literal["auto", "opaque", "transparent"] | None = None
    stream: bool = False
    partial_images: int | None = Field(default=None, ge=0, le=3)
    quality: str | None = None
    moderation: str | None = None
    user: str | None = None
    input_fidelity: str | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    num_inference_steps: int | None = Field(default=None, ge=1)
    guidance_scale: float | None = Field(default=None, ge=0.0)
    step_cache: bool | None = None


def parse_params(fields: dict[str, Any]) -> ImageParams:
    """Validate raw fields (JSON body or form fields) into ImageParams, or raise a 400 ServiceError."""
    try:
        return ImageParams.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = ".".join(str(part) for part in error["loc"]) or None
        if error["type"] == "extra_forbidden":
            message = f"Unknown parameter: '{param}'."
        elif error["type"] == "missing":
            message = f"Missing required parameter: '{param}'."
        else:
            message = f"Invalid value for '{param}': {error['msg']}."
        raise ServiceError(message, param=param, code="invalid_value") from None


def check_params(params: ImageParams, limits: Limits) -> None:
    """Checks that depend on the configured limits or on features not offered."""
    prompt = params.prompt.strip()
    if not prompt:
        raise ServiceError("prompt must not be empty", param="prompt", code="invalid_value")
    if len(params.prompt) > limits.max_prompt_chars:
        raise ServiceError(
            f"prompt is {len(params.prompt)} characters; the limit is {limits.max_prompt_chars}",
            param="prompt",
            code="invalid_value",
        )
    if params.n > limits.max_n:
        raise ServiceError(f"n must be between 1 and {limits.max_n}", param="n", code="invalid_value")
    if params.num_inference_steps is not None and params.num_inference_steps > limits.max_steps:
        raise ServiceError(
            f"num_inference_steps must be between 1 and {limits.max_steps}",
            param="num_inference_steps",
            code="invalid_value",
        )
    if params.guidance_scale is not None and params.guidance_scale > limits.max_guidance_scale:
        raise ServiceError(
            f"guidance_scale must be between 0 and {limits.max_guidance_scale:g}",
            param="guidance_scale",
            code="invalid_value",
        )
    if params.response_format == "url":
        raise ServiceError(
            "response_format 'url' is not supported by this server; use 'b64_json'",
            param="response_format",
            code="unsupported_value",
        )
    if params.background == "transparent":
        raise ServiceError(
            "background 'transparent' is not supported by FLUX.2", param="background", code="unsupported_value"
        )
    if params.partial_images and not params.stream:
        raise ServiceError("partial_images needs stream=true", param="partial_images", code="invalid_value")


def build_generation_request(params: ImageParams, limits: Limits, default_size: tuple[int, int]) -> ImageRequest:
    check_params(params, limits)
    width, height = parse_size(params.size, limits) or default_size
    return ImageRequest(width=width, height=height, **_request_fields(params))


def build_edit_request(params: ImageParams, images: list[bytes], mask: bytes | None, limits: Limits) -> ImageRequest:
    check_params(params, limits)
    if not images:
        raise ServiceError(
            "at least one image is required: send 'image' or 'image[]'", param="image", code="missing_image"
        )
    if len(images) > limits.max_reference_images:
        raise ServiceError(
            f"{len(images)} images sent; at most {limits.max_reference_images} are allowed",
            param="image",
            code="too_many_images",
        )
    param = "image" if len(images) == 1 else "image[{}]"
    arrays = tuple(decode_image(data, limits, param.format(i)) for i, data in enumerate(images))
    first_h, first_w = arrays[0].shape[:2]
    decoded_mask = decode_mask(mask, limits, (first_w, first_h)) if mask is not None else None
    width, height = parse_size(params.size, limits) or auto_size(first_w, first_h, limits)
    return ImageRequest(width=width, height=height, images=arrays, mask=decoded_mask, **_request_fields(params))


def _request_fields(params: ImageParams) -> dict[str, Any]:
    """What edits and generations pass on alike; a request without a seed gets a fresh one."""
    return {
        "prompt": params.prompt,
        "n": params.n,
        "seed": params.seed if params.seed is not None else secrets.randbelow(2**31),
        "num_inference_steps": params.num_inference_steps,
        "guidance_scale": params.guidance_scale,
        "step_cache": params.step_cache,
        "jpeg_quality": output_quality(params.output_compression) if params.output_format == "jpeg" else None,
    }


def image_file(image: np.ndarray | EncodedImage, params: ImageParams) -> tuple[bytes, str]:
    """(file, "WxH") of one result image; a file the GPU already encoded passes through."""
    if isinstance(image, EncodedImage):
        return image.data, f"{image.width}x{image.height}"
    height, width = image.shape[:2]
    return encode_image(image, params.output_format, params.output_compression), f"{width}x{height}"


def images_response(result: ImageResult, params: ImageParams) -> bytes:
    """The OpenAI ImagesResponse body, as JSON bytes.

    Base64 needs no JSON escaping, so each image's base64 is spliced into the JSON as bytes: the
    megabytes are never decoded to a str, scanned by the JSON encoder and encoded back (a third of
    the CPU time of ``json.dumps`` of the same body; what remains is base64 itself).
    """
    files = [image_file(image, params) for image in result.images]
    head = json.dumps({"created": int(time.time()), "output_format": params.output_format, "size": files[0][1]})
    parts = [head[:-1].encode(), b',"data":[']
    for index, (file, _) in enumerate(files):
        parts += [b"," if index else b"", b'{"b64_json":"', base64.b64encode(file), b'"}']
    return b"".join([*parts, b"]}"])  # one copy of the megabytes


def stream_payloads(
    event: StepProgress | PartialImage | ImageResult, params: ImageParams, prefix: str
) -> list[dict[str, Any]]:
    """Server-sent event payloads for one engine event (``prefix``: image_generation or image_edit).

    ``.partial_image`` and ``.completed`` follow the OpenAI Images streaming events; ``.progress`` is
    this server's extension. A request for n images ends with n ``.completed`` events.
    """
    created = int(time.time())
    common = {"created_at": created, "output_format": params.output_format, "background": "opaque", "quality": "auto"}
    if isinstance(event, StepProgress):
        return [
            {
                "type": f"{prefix}.progress",
                "step": event.step,
                "num_steps": event.num_steps,
                "elapsed_s": round(event.elapsed_s, 3),
            }
        ]
    if isinstance(event, PartialImage):
        height, width = event.image.shape[:2]
        b64 = to_b64(encode_image(event.image, params.output_format, params.output_compression))
        return [
            {
                "type": f"{prefix}.partial_image",
                "b64_json": b64,
                "partial_image_index": event.index,
                "size": f"{width}x{height}",
                **common,
            }
        ]
    return [
        {"type": f"{prefix}.completed", "b64_json": to_b64(file), "size": size, **common}
        for file, size in (image_file(image, params) for image in event.images)
    ]
