"""LoRA adapters through the service: an adapter is a model for the openai client, ``lora`` stacks them, and bad
adapter files are refused per request while the replica stays healthy."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import BadRequestError, NotFoundError, OpenAI

from deployments.engine.synthetic.tiny import build_tiny_klein
from tests.helpers import png_bytes, served_app
from tests.lora_files import save_peft_lora

SHAPES = [{"width": 64, "height": 64, "references": 0}, {"width": 64, "height": 64, "references": 1}]
BODY = {"prompt": "a red car", "size": "64x64", "seed": 3, "model": "tiny-klein"}


@pytest.fixture(scope="module")
def lora_url(ray_cluster: dict[str, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("service-loras")
    transformer = build_tiny_klein().transformer
    (root / "broken.safetensors").write_bytes(b"\x00not a safetensors file at all")
    adapters = [
        {"name": "a", "source": str(save_peft_lora(transformer, root / "a", seed=1, rank=4))},
        {"name": "b", "source": str(save_peft_lora(transformer, root / "b", seed=2, rank=2)), "scale": 0.5},
        {"name": "wide", "source": str(save_peft_lora(transformer, root / "wide", seed=5, rank=16))},
        {"name": "broken", "source": str(root / "broken.safetensors")},
    ]
    model = {
        "name": "tiny-klein",
        "source": "tiny-klein",
        "warmup_shapes": SHAPES,
        "lora": {"adapters": adapters, "max_loaded": 2, "max_rank": 8, "max_per_request": 2},
        "deployment_options": {"ray_actor_options": {"num_cpus": 0.1}},
    }
    config = {"models": [model], "ingress_options": {"ray_actor_options": {"num_cpus": 0.1}}}
    with served_app(config, "lora", "/lora", ray_cluster["http"]) as url:
        yield url


def generate(url: str, **fields: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/images/generations", json={**BODY, **fields}, timeout=120)


def image_of(response: httpx.Response) -> bytes:
    assert response.status_code == 200, response.text
    return base64.b64decode(response.json()["data"][0]["b64_json"])


def test_adapters_are_models_with_a_parent(lora_url: str) -> None:
    client = OpenAI(base_url=f"{lora_url}/v1", api_key="unused")
    cards = {model.id: model.model_dump() for model in client.models.list()}
    assert set(cards) == {"tiny-klein", "tiny-klein/a", "tiny-klein/b", "tiny-klein/wide", "tiny-klein/broken"}
    assert cards["tiny-klein/a"]["parent"] == "tiny-klein" and cards["tiny-klein"]["parent"] is None
    assert cards["tiny-klein"]["lora"] == {
        "adapters": ["a", "b", "wide", "broken"],
        "max_per_request": 2,
        "max_scale": 4,
    }
    assert client.models.retrieve("tiny-klein/b").model_dump()["adapter"] == "b"


def test_openai_client_generates_with_an_adapter_model(lora_url: str) -> None:
    client = OpenAI(base_url=f"{lora_url}/v1", api_key="unused")
    base = image_of(generate(lora_url))
    with_a = base64.b64decode(
        client.images.generate(model="tiny-klein/a", prompt="a red car", size="64x64", extra_body={"seed": 3})
        .data[0]
        .b64_json
    )
    assert with_a != base
    response = generate(lora_url, model="tiny-klein/a")
    assert image_of(response) == with_a and response.headers["x-lora"] == "a:1"
    assert image_of(generate(lora_url, lora=[{"name": "a", "scale": 0.0}])) == base  # scale 0 is the base model
    assert image_of(generate(lora_url)) == base  # nothing leaks from the adapter runs into the base model


def test_stacked_adapters_give_one_result_whatever_ran_before(lora_url: str) -> None:
    stack = [{"name": "b", "scale": 0.5}, {"name": "a", "scale": 0.8}]
    first = generate(lora_url, lora=stack)
    assert first.headers["x-lora"] == "a:0.8+b:0.5"
    image_of(generate(lora_url, model="tiny-klein/b"))  # another stack in between, evicting nothing needed
    assert image_of(generate(lora_url, lora=list(reversed(stack)))) == image_of(first)
    assert image_of(generate(lora_url, model="tiny-klein/a", lora=[{"name": "b"}])) != image_of(first)


def test_openai_client_edits_with_a_lora_stack(lora_url: str) -> None:
    """The client flattens ``lora`` into multipart ``lora[][name]`` / ``lora[][scale]`` fields, as curl sends them."""
    client = OpenAI(base_url=f"{lora_url}/v1", api_key="unused")
    image = png_bytes(64, 64, seed=4)
    edit = client.images.edit(
        model="tiny-klein",
        image=("cat.png", image, "image/png"),
        prompt="a dog",
        size="64x64",
        extra_body={"seed": 9, "lora": [{"name": "a", "scale": 0.8}, {"name": "b", "scale": 0.5}]},
    )
    fields = {"prompt": "a dog", "model": "tiny-klein", "size": "64x64", "seed": "9"}
    stack = {"lora[][name]": ["a", "b"], "lora[][scale]": ["0.8", "0.5"]}
    files = {"image": ("c.png", image)}
    by_hand = httpx.post(f"{lora_url}/v1/images/edits", data={**fields, **stack}, files=files, timeout=120)
    assert by_hand.headers["x-lora"] == "a:0.8+b:0.5"
    assert image_of(by_hand) == base64.b64decode(edit.data[0].b64_json)
    plain = httpx.post(f"{lora_url}/v1/images/edits", data=fields, files=files, timeout=120)
    assert image_of(plain) != image_of(by_hand)


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"model": "tiny-klein/nope"}, 404, "model_not_found"),
        ({"lora": [{"name": "nope"}]}, 404, "adapter_not_found"),
        ({"lora": [{"name": "a"}, {"name": "b"}, {"name": "wide"}]}, 400, "too_many_adapters"),
        ({"lora": [{"name": "a", "scale": 9.0}]}, 400, "invalid_adapter_scale"),
        ({"lora": [{"name": "a"}, {"name": "a"}]}, 400, "duplicate_adapter"),
        ({"lora": [{"name": "a", "weight": 1}]}, 400, "invalid_value"),
        ({"lora": "a"}, 400, "invalid_value"),
        ({"model": "tiny-klein/wide"}, 400, "invalid_adapter"),  # rank 16 over max_rank 8
        ({"model": "tiny-klein/broken"}, 400, "invalid_adapter"),  # not a safetensors file
    ],
)
def test_bad_adapter_requests_are_refused_and_the_model_stays_healthy(
    lora_url: str, fields: dict, status: int, code: str
) -> None:
    base = image_of(generate(lora_url))
    response = generate(lora_url, **fields)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["param"].split(".")[0] in ("model", "lora"), error
    assert str(Path.home()) not in error["message"] and "/tmp" not in error["message"]  # no server paths leak
    assert image_of(generate(lora_url, model="tiny-klein/a")) != base
    assert image_of(generate(lora_url)) == base


def test_multipart_scales_must_pair_with_names(lora_url: str) -> None:
    fields = {"prompt": "x", "lora[][name]": ["a", "b"], "lora[][scale]": ["0.8"]}
    response = httpx.post(
        f"{lora_url}/v1/images/edits", data=fields, files={"image": ("c.png", png_bytes(64, 64))}, timeout=60
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "lora"


def test_openai_client_errors_for_adapters(lora_url: str) -> None:
    client = OpenAI(base_url=f"{lora_url}/v1", api_key="unused")
    with pytest.raises(NotFoundError):
        client.images.generate(model="tiny-klein/nope", prompt="x", size="64x64")
    with pytest.raises(BadRequestError):
        client.images.generate(model="tiny-klein/broken", prompt="x", size="64x64")
