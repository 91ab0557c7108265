"""The serving layer without Ray or HTTP: a validated request becomes an ImageRequest, a result the OpenAI body."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from deployments.config import Limits, ModelConfig
from deployments.openai.images import encode_image
from deployments.openai.protocol import ImageParams
from deployments.openai.references import ReferenceCache
from deployments.openai.serving import build_generation_request, images_response
from deployments.types import EncodedImage, ImageResult, Route


def test_gpu_encoded_files_pass_through_the_response_untouched() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    jpeg = encode_image(pixels, "jpeg", None)
    result = ImageResult(
        images=[EncodedImage(jpeg, "jpeg", 48, 32)], seed=1, num_inference_steps=4, guidance_scale=1.0, weights="x"
    )
    params = ImageParams(prompt="p", output_format="jpeg")
    body = json.loads(images_response(result, params, ReferenceCache(0)))
    assert base64.b64decode(body["data"][0]["b64_json"]) == jpeg and body["size"] == "48x32"


@pytest.mark.parametrize("fmt,compression,quality", [("jpeg", None, 95), ("jpeg", 30, 70), ("png", None, None)])
def test_requests_ask_for_jpeg_quality_only_when_jpeg_is_wanted(fmt: str, compression: int | None, quality) -> None:
    params = ImageParams(prompt="p", output_format=fmt, output_compression=compression)
    request = build_generation_request(params, Limits(), Route(ModelConfig(default_size=(64, 64))))
    assert request.jpeg_quality == quality


def test_response_json_with_spliced_base64_is_the_openai_shape() -> None:
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (40, 24, 3), dtype=np.uint8) for _ in range(2)]
    result = ImageResult(images=arrays, seed=1, num_inference_steps=4, guidance_scale=1.0, weights="x")
    params = ImageParams(prompt="p", output_format="png")
    body = json.loads(images_response(result, params, ReferenceCache(0)))
    assert set(body) == {"created", "data", "output_format", "size"} and isinstance(body["created"], int)
    assert body["output_format"] == "png" and body["size"] == "24x40" and len(body["data"]) == 2
    for item, pixels in zip(body["data"], arrays, strict=True):
        assert list(item) == ["b64_json"]
        decoded = Image.open(io.BytesIO(base64.b64decode(item["b64_json"], validate=True)))
        assert np.array_equal(np.asarray(decoded), pixels)
