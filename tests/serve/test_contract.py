"""The API contract as a client meets it: types, formats, model routes, timings headers, OpenAPI bodies."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from openai import NotFoundError, OpenAI
from PIL import Image

from tests.helpers import decode_b64_image, png_bytes

ERROR_KEYS = {"message", "type", "param", "code"}


def assert_error(response: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


def test_deeply_nested_json_is_a_400_and_the_service_stays_healthy(client: httpx.Client) -> None:
    for body in ('{"prompt": ' + "[" * 5000 + "]" * 5000 + "}", "[" * 100_000):
        response = client.post("/v1/images/generations", content=body, headers={"content-type": "application/json"})
        assert_error(response, 400, "invalid_json")
    assert client.post("/v1/images/generations", json={"prompt": "a cat", "size": "64x64"}).status_code == 200


@pytest.mark.parametrize(
    ("field", "value"),
    [("stream", "yes"), ("n", True), ("n", 1.0), ("seed", "5"), ("prompt", 5), ("guidance_scale", "2")],
)
def test_json_fields_of_the_wrong_type_are_rejected(client: httpx.Client, field: str, value: object) -> None:
    response = client.post("/v1/images/generations", json={"prompt": "a cat", field: value})
    assert_error(response, 400, "invalid_value", field)


def test_json_infinity_is_rejected(client: httpx.Client) -> None:
    body = '{"prompt": "a cat", "guidance_scale": 1e999}'
    response = client.post("/v1/images/generations", content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, param="guidance_scale")


@pytest.mark.parametrize("value", ["yes", "1", "on", "maybe"])
def test_form_booleans_are_spelled_true_or_false(client: httpx.Client, value: str) -> None:
    files = {"image": ("a.png", png_bytes(64, 64), "image/png")}
    response = client.post("/v1/images/edits", data={"prompt": "a dog", "stream": value}, files=files)
    assert_error(response, 400, "invalid_value", "stream")


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "BMP"])
def test_uploads_must_be_png_jpeg_or_webp(client: httpx.Client, fmt: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buffer, format=fmt)
    files = {"image": (f"a.{fmt.lower()}", buffer.getvalue(), "application/octet-stream")}
    error = assert_error(
        client.post("/v1/images/edits", data={"prompt": "x"}, files=files), 400, "invalid_image_format"
    )
    assert "PNG, JPEG or WebP" in error["message"]


def test_models_retrieve(base_url: str) -> None:
    openai = OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    model = openai.models.retrieve("tiny-klein")
    assert model.id == "tiny-klein" and model.owned_by == "flux2-serve"
    card = model.model_dump()
    assert card["is_demo"] is True and card["limits"]["max_n"] == 4
    assert card["warmup_shapes"] == [{"width": 64, "height": 64, "references": 0}]
    with pytest.raises(NotFoundError):
        openai.models.retrieve("gpt-image-1")


def test_unknown_model_route_is_a_404_in_the_error_shape(client: httpx.Client) -> None:
    assert_error(client.get("/v1/models/nope"), 404, "model_not_found", "model")


def test_n_images_follow_seed_plus_i(client: httpx.Client) -> None:
    """Image i of an n-image request starts from the noise of seed + i. The n images share one batched call, so
    against n single runs they may differ by rounding: at most one level of 255, as the README states."""
    body = {"prompt": "a lighthouse", "size": "64x64", "model": "tiny-klein", "num_inference_steps": 2}
    pair = client.post("/v1/images/generations", json={**body, "n": 2, "seed": 7}).json()["data"]
    alone = [client.post("/v1/images/generations", json={**body, "seed": 7 + i}).json()["data"][0] for i in (0, 1)]
    for batched, single in zip(pair, alone, strict=True):
        a = np.asarray(decode_b64_image(batched["b64_json"]), dtype=np.int16)
        b = np.asarray(decode_b64_image(single["b64_json"]), dtype=np.int16)
        assert np.abs(a - b).max() <= 1
    first, second = (np.asarray(decode_b64_image(item["b64_json"])) for item in pair)
    assert not np.array_equal(first, second)


def test_queue_header_counts_the_wait_in_serves_queue(tight_url: str) -> None:
    """One replica taking one request at a time: the second request's queue time holds the first one's run."""
    body = {"prompt": "a cat", "size": "512x512", "num_inference_steps": 12}
    with httpx.Client(base_url=tight_url, timeout=120) as http, ThreadPoolExecutor(2) as pool:
        first = pool.submit(http.post, "/v1/images/generations", json=body)
        time.sleep(0.2)
        second = pool.submit(http.post, "/v1/images/generations", json=body)
        responses = [first.result(), second.result()]
    assert all(r.status_code == 200 for r in responses)
    waited = max(responses, key=lambda r: float(r.headers["x-queue-ms"]))
    other = min(responses, key=lambda r: float(r.headers["x-queue-ms"]))
    assert float(waited.headers["x-queue-ms"]) >= 0.5 * float(other.headers["x-generate-ms"])
    stages = dict(part.split(";dur=") for part in waited.headers["server-timing"].split(", "))
    assert set(stages) == {"parse", "queue", "adapter", "generate", "handle", "encode"}
    assert float(stages["queue"]) <= float(waited.headers["x-queue-ms"]) <= float(waited.headers["x-total-ms"])


def test_model_listing_does_not_wait_for_busy_replicas(tight_url: str) -> None:
    body = {"prompt": "a cat", "size": "512x512", "num_inference_steps": 12}
    with httpx.Client(base_url=tight_url, timeout=120) as http, ThreadPoolExecutor(3) as pool:
        busy = [pool.submit(http.post, "/v1/images/generations", json=body) for _ in range(3)]
        time.sleep(0.3)
        started = time.perf_counter()
        listing = http.get("/v1/models")
        elapsed = time.perf_counter() - started
        assert all(future.result().status_code in (200, 503) for future in busy)
    assert listing.status_code == 200 and listing.json()["data"][0]["id"] == "flux2"
    assert elapsed < 1.0, elapsed


def test_openapi_describes_both_image_bodies(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]

    def body_schema(path: str, media: str) -> dict:
        ref = schema["paths"][path]["post"]["requestBody"]["content"][media]["schema"]["$ref"]
        return components[ref.rsplit("/", 1)[1]]

    generation = body_schema("/v1/images/generations", "application/json")
    edit = body_schema("/v1/images/edits", "multipart/form-data")
    assert generation["required"] == ["prompt"] and "seed" in generation["properties"]
    assert {"image", "image[]", "mask", "prompt", "n"} <= set(edit["properties"])
    assert edit["properties"]["mask"]["format"] == "binary"
    for path in ("/v1/images/generations", "/v1/images/edits", "/v1/models"):
        operation = next(iter(schema["paths"][path].values()))
        assert {"200", "400"} <= set(operation["responses"])


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/v1/models", "/v1/models/tiny-dev"])
def test_head_answers_as_get_does(client: httpx.Client, path: str) -> None:
    """Load balancers and uptime checks probe with HEAD: the status and headers of GET, no body."""
    got, head = client.get(path), client.head(path)
    assert head.status_code == got.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]


@pytest.mark.parametrize("name", ["a" * 300 + ".js", "../ingress.py", "%2e%2e%2fconfig.js", "index.html", "x.js"])
def test_unknown_static_files_are_a_404(client: httpx.Client, name: str) -> None:
    error = assert_error(client.get(f"/static/{name}"), 404, "not_found")
    assert len(error["message"]) < 200
    assert client.get("/static/playground.js").status_code == 200


def test_a_second_mask_is_refused(client: httpx.Client) -> None:
    mask = io.BytesIO()
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(mask, format="PNG")
    files = [("image", ("a.png", png_bytes(64, 64), "image/png"))] + [
        ("mask", (f"m{i}.png", mask.getvalue(), "image/png")) for i in range(2)
    ]
    assert_error(client.post("/v1/images/edits", data={"prompt": "x"}, files=files), 400, "invalid_value", "mask")
