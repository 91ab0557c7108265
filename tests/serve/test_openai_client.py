"""The official openai Python client, unchanged, against the service."""

from __future__ import annotations

import io

import openai
import pytest

from tests.helpers import decode_b64_image, png_bytes


@pytest.fixture(scope="module")
def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)


def test_sdk_edit_single_image(sdk: openai.OpenAI) -> None:
    result = sdk.images.edit(
        model="tiny-dev",
        image=("cat.png", png_bytes(64, 64), "image/png"),
        prompt="turn the cat into a dog",
        size="128x64",
        extra_body={"seed": 11},
    )
    assert result.data and result.data[0].b64_json
    assert decode_b64_image(result.data[0].b64_json).size == (128, 64)


def test_sdk_edit_several_images(sdk: openai.OpenAI) -> None:
    images = [("a.png", png_bytes(64, 64, seed=1), "image/png"), ("b.png", png_bytes(96, 80, seed=2), "image/png")]
    result = sdk.images.edit(model="tiny-klein", image=images, prompt="put the dog in the car", n=2)
    assert len(result.data) == 2
    assert {decode_b64_image(item.b64_json).size for item in result.data} == {(64, 64)}


def test_sdk_generate(sdk: openai.OpenAI) -> None:
    result = sdk.images.generate(model="tiny-klein", prompt="a watercolor cat", size="64x64", output_format="png")
    assert decode_b64_image(result.data[0].b64_json).size == (64, 64)


def test_sdk_raw_response_headers(sdk: openai.OpenAI) -> None:
    raw = sdk.images.with_raw_response.generate(model="tiny-dev", prompt="a cat", size="64x64", extra_body={"seed": 5})
    assert raw.headers["x-seed"] == "5" and raw.headers["x-model-weights"] == "random-tiny"


def test_sdk_errors_are_typed(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        sdk.images.generate(model="flux-nope", prompt="a cat")
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        sdk.images.edit(model="tiny-dev", image=io.BytesIO(b"not an image"), prompt="x")
    assert err.value.body["param"] == "image"
