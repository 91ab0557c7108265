"""The Ray Serve graph over real HTTP: edits, generations, models, readiness, headers."""

from __future__ import annotations

import httpx
import numpy as np

from tests.helpers import decode_b64_image, png_bytes, wait_until


def edit(client: httpx.Client, images: list[tuple[str, bytes]], **fields: str) -> httpx.Response:
    files = [(key, (f"ref{i}.png", data, "image/png")) for i, (key, data) in enumerate(images)]
    return client.post("/v1/images/edits", files=files, data={"prompt": "make it red", **fields})


def test_edit_with_single_image_field(client: httpx.Client) -> None:
    response = edit(client, [("image", png_bytes(64, 64))], size="128x96", seed="7")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["size"] == "128x96" and body["output_format"] == "png" and isinstance(body["created"], int)
    image = decode_b64_image(body["data"][0]["b64_json"])
    assert image.format == "PNG" and image.size == (128, 96) and image.mode == "RGB"
    assert response.headers["x-seed"] == "7"
    assert response.headers["x-model"] == "tiny-dev"  # the first configured model is the default
    assert response.headers["x-model-weights"] == "random-tiny"
    assert float(response.headers["x-total-ms"]) >= float(response.headers["x-generate-ms"]) > 0
    stages = dict(part.split(";dur=") for part in response.headers["server-timing"].split(", "))
    assert list(stages) == ["parse", "queue", "adapter", "generate", "handle", "encode"]
    durations = {key: float(value) for key, value in stages.items()}
    assert durations["generate"] == float(response.headers["x-generate-ms"])
    assert durations["parse"] > 0 and durations["encode"] > 0 and durations["handle"] > 0
    assert sum(durations.values()) <= float(response.headers["x-total-ms"]) + 0.5  # the stages add up to the total


def test_edit_with_image_array_and_auto_size(client: httpx.Client) -> None:
    refs = [
        ("image[]", png_bytes(80, 112, seed=1)),
        ("image[]", png_bytes(64, 64, seed=2)),
        ("image[]", png_bytes(96, 80, seed=3)),
    ]
    response = edit(client, refs, model="tiny-klein", n="2")
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["data"]) == 2
    sizes = {decode_b64_image(item["b64_json"]).size for item in body["data"]}
    assert sizes == {(80, 112)}  # auto: the first image's size
    assert response.headers["x-model"] == "tiny-klein"


def test_same_seed_gives_identical_bytes(client: httpx.Client) -> None:
    refs = [("image", png_bytes(64, 64, seed=5))]
    first = edit(client, refs, seed="1234").json()["data"][0]["b64_json"]
    second = edit(client, refs, seed="1234").json()["data"][0]["b64_json"]
    third = edit(client, refs, seed="1235").json()["data"][0]["b64_json"]
    assert first == second and first != third


def test_no_seed_gets_a_fresh_one_that_reproduces(client: httpx.Client) -> None:
    refs = [("image", png_bytes(64, 64, seed=6))]
    a, b = edit(client, refs), edit(client, refs)
    assert a.headers["x-seed"] != b.headers["x-seed"]
    again = edit(client, refs, seed=a.headers["x-seed"])
    assert again.json()["data"][0]["b64_json"] == a.json()["data"][0]["b64_json"]


def test_generation_json(client: httpx.Client) -> None:
    response = client.post(
        "/v1/images/generations",
        json={"prompt": "a cat", "size": "64x128", "model": "tiny-klein", "output_format": "webp"},
    )
    assert response.status_code == 200, response.text
    image = decode_b64_image(response.json()["data"][0]["b64_json"])
    assert image.format == "WEBP" and image.size == (64, 128)


def test_generation_default_size_and_jpeg(client: httpx.Client) -> None:
    response = client.post(
        "/v1/images/generations",
        json={
            "prompt": "a cat",
            "output_format": "jpeg",
            "output_compression": 50,
            "seed": 3,
            "num_inference_steps": 2,
            "guidance_scale": 3.5,
        },
    )
    assert response.status_code == 200, response.text
    image = decode_b64_image(response.json()["data"][0]["b64_json"])
    assert image.format == "JPEG" and image.size == (64, 64)  # the model's configured default_size
    assert response.headers["x-num-inference-steps"] == "2"


def test_output_is_not_blank(client: httpx.Client) -> None:
    response = client.post("/v1/images/generations", json={"prompt": "a cat", "size": "64x64"})
    pixels = np.asarray(decode_b64_image(response.json()["data"][0]["b64_json"]))
    assert pixels.std() > 1


def test_models_list(client: httpx.Client) -> None:
    described = lambda: all(model["family"] for model in client.get("/v1/models").json()["data"])  # noqa: E731
    assert wait_until(described, 20, 0.2)  # replica details arrive in the background
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    by_id = {model["id"]: model for model in body["data"]}
    assert set(by_id) == {"tiny-dev", "tiny-klein"}
    assert by_id["tiny-dev"]["family"] == "dev" and by_id["tiny-klein"]["family"] == "klein"
    assert all(model["is_demo"] and model["weights"] == "random-tiny" for model in body["data"])
    assert all(model["streaming"] for model in body["data"])
    # the speed options each replica runs (on a CPU: neither fp8 nor FA3)
    assert all((model["quantization"], model["attention_backend"]) == ("none", "default") for model in body["data"])


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert set(ready.json()["models"]) == {"tiny-dev", "tiny-klein"}


def test_playground_page_is_served(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    assert "FLUX.2" in response.text


def test_openapi_schema_lists_the_routes(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/images/edits", "/v1/images/generations", "/v1/models", "/healthz", "/readyz"} <= set(paths)
