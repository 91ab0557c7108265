"""Property-based fuzzing of both image routes: whatever arrives, no 5xx, no hang, one error shape."""

from __future__ import annotations

import json
import random
from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import decode_b64_image, png_bytes
from tests.unit.test_image_fuzz import fuzz_case
from tests.unit.test_images import junk_exif_file

ERROR_KEYS = {"message", "type", "param", "code"}
CLIENT_ERRORS = {400, 404, 413, 415}
JSON = {"content-type": "application/json"}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
field_values = {
    "prompt": st.one_of(st.text(max_size=60), scalars),
    "model": st.one_of(st.sampled_from(["tiny-dev", "tiny-klein", "gpt-image-1", ""]), scalars),
    "n": st.one_of(st.integers(min_value=-2, max_value=6), scalars),
    "size": st.one_of(st.sampled_from(["auto", "64x64", "128x64", "64x80", "0x0", "64", "1e3x64", "-64x64"]), scalars),
    "output_format": st.one_of(st.sampled_from(["png", "jpeg", "webp", "gif", "PNG"]), scalars),
    "output_compression": st.one_of(st.integers(min_value=-5, max_value=120), scalars),
    "seed": st.one_of(st.integers(min_value=-5, max_value=2**64), scalars),
    "num_inference_steps": st.one_of(st.integers(min_value=-1, max_value=30), scalars),
    "guidance_scale": st.one_of(st.floats(min_value=-1, max_value=50), scalars),
    "response_format": st.one_of(st.sampled_from(["b64_json", "url"]), scalars),
    "stream": scalars,
    "bogus": scalars,
}
bodies = st.fixed_dictionaries({}, optional=field_values)


def assert_sane(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert response.status_code in CLIENT_ERRORS, response.text
        assert set(response.json()["error"]) == ERROR_KEYS


FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(body=st.one_of(bodies, st.lists(scalars, max_size=3), scalars))
def test_fuzz_generations_json(client: httpx.Client, body: object) -> None:
    content = json.dumps(body)  # NaN and Infinity come out as the invalid JSON a careless client sends
    assert_sane(client.post("/v1/images/generations", content=content, headers=JSON, timeout=60))


@FUZZ
@given(
    fields=bodies,
    images=st.lists(
        st.one_of(
            st.binary(max_size=300),
            st.sampled_from([png_bytes(64, 64), png_bytes(80, 64, seed=1), png_bytes(64, 64)[:90]]),
        ),
        max_size=5,
    ),
    key=st.sampled_from(["image", "image[]", "mask", "images"]),
)
def test_fuzz_edits_multipart(client: httpx.Client, fields: dict, images: list[bytes], key: str) -> None:
    data = {name: str(value) for name, value in fields.items()}
    files = [(key, (f"{i}.png", blob, "image/png")) for i, blob in enumerate(images)] or [("x", (None, "y"))]
    assert_sane(client.post("/v1/images/edits", data=data, files=files, timeout=60))


HTTP_SEED = 2323
HTTP_CASES = 80  # of the unit fuzzer's mutated PNG, JPEG and WebP files, each sent three ways
EDIT_FIELDS = {"prompt": "x", "model": "tiny-dev", "size": "64x64", "num_inference_steps": "1"}


def uploads(data: bytes, good: bytes) -> list[tuple[str, list, str]]:
    """(how, multipart files, the param an error must name): the file as the one image, as image[] #2, as mask."""
    return [
        ("image", [("image", ("a.png", data, "image/png"))], "image"),
        (
            "image[] #2",
            [("image[]", ("a.png", good, "image/png")), ("image[]", ("b.png", data, "image/png"))],
            "image[1]",
        ),
        ("mask", [("image", ("a.png", good, "image/png")), ("mask", ("m.png", data, "image/png"))], "mask"),
    ]


def http_sample() -> list[tuple[str, bytes]]:
    """(name, file): issue #23's two files (junk EXIF in a PNG and a WebP: a 500 before), then a seeded sample."""
    issue = [(f"junk EXIF {fmt}", junk_exif_file(fmt)) for fmt in ("PNG", "WEBP")]
    mutated = [fuzz_case(index) for index in random.Random(HTTP_SEED).sample(range(100_000), HTTP_CASES)]
    return issue + [(case.name, case.data) for case in mutated]


def test_mutated_image_files_over_http(client: httpx.Client) -> None:
    """Files mutated chunk by chunk and marker by marker reach the one guarded decoder through the real multipart
    path: each is decoded or refused with a 4xx naming the field it came in, and the service keeps serving."""
    good = png_bytes(64, 64)
    statuses: Counter[tuple[str, int]] = Counter()
    for name, data in http_sample():
        for how, files, param in uploads(data, good):
            response = client.post("/v1/images/edits", data=EDIT_FIELDS, files=files, timeout=60)
            statuses[how, response.status_code] += 1
            assert response.status_code in {200, 400, 413}, (name, how, response.status_code, response.text[:500])
            if response.status_code != 200:
                error = response.json()["error"]
                assert set(error) == ERROR_KEYS and error["param"] == param, (name, how, error)
    print(dict(sorted(statuses.items())))
    for how in ("image", "image[] #2", "mask"):
        assert statuses[how, 200] and statuses[how, 400], (how, statuses)  # the sample both decodes and refuses
    files = {"image": ("a.png", good, "image/png")}
    response = client.post("/v1/images/edits", data=EDIT_FIELDS, files=files, timeout=60)
    assert response.status_code == 200 and decode_b64_image(response.json()["data"][0]["b64_json"]).size == (64, 64)


# Schema-driven: every operation /openapi.json declares, with bodies generated from its request schema.
@pytest.fixture(scope="module")
def api_schema(base_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json")


api = schemathesis.pytest.from_fixture("api_schema")


@api.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzz_every_declared_operation(case: schemathesis.Case, base_url: str) -> None:
    response = case.call(base_url=base_url, timeout=60)
    assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
    if response.status_code >= 400 and case.method != "HEAD":  # an answer to HEAD has no body
        assert set(response.json()["error"]) == ERROR_KEYS, response.text[:500]
