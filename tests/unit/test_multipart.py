"""deployments/openai/multipart.py: edit forms as httpx (the openai client's transport) encodes them, parsed into
text fields, images and mask, within the form's bounds."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from deployments.config import Limits
from deployments.errors import InvalidRequest
from deployments.openai.multipart import EXTRA_FILES, MAX_TEXT_FIELDS, EditForm, parse_edit_form
from deployments.openai.protocol import parse_form_fields

LIMITS = Limits(max_reference_images=3, max_body_bytes=4096)


def encoded(data: dict | list | None = None, files: list | None = None) -> tuple[bytes, str]:
    """(body, content type) of a multipart POST as httpx encodes it; ``data`` as (name, value) pairs may repeat a
    name. Text goes as parts without a filename, as curl's ``-F name=value`` sends it."""
    pairs = list(data.items()) if isinstance(data, dict) else data or []
    parts = [(name, (None, value)) for name, value in pairs] + (files or [])
    request = httpx.Request("POST", "http://server/v1/images/edits", files=parts)
    return request.read(), request.headers["content-type"]


def parse(data: dict | list | None = None, files: list | None = None, limits: Limits = LIMITS) -> EditForm:
    return asyncio.run(parse_edit_form(*encoded(data, files), limits))


def refused(data: dict | list | None = None, files: list | None = None, limits: Limits = LIMITS) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as err:
        parse(data, files, limits)
    return err.value


def test_images_in_order_the_mask_and_the_text_fields() -> None:
    files = [
        ("image[]", ("a.png", b"first", "image/png")),
        ("mask", ("m.png", b"mask", "image/png")),
        ("image[]", ("b.png", b"second", "image/png")),
    ]
    fields, images, mask = parse({"prompt": "a dog", "n": "2", "stream": "false"}, files)
    assert fields == {"prompt": "a dog", "n": "2", "stream": "false"}
    assert images == [b"first", b"second"] and mask == b"mask"
    params = parse_form_fields(fields)
    assert (params.prompt, params.n, params.stream) == ("a dog", 2, False)


def test_an_image_sent_as_text_is_its_bytes_for_the_decoder_to_judge() -> None:
    fields, images, mask = parse({"prompt": "x", "image": "not a file"}, [("mask", ("m.png", b"m", "image/png"))])
    assert fields == {"prompt": "x"} and images == [b"not a file"] and mask == b"m"


def test_lora_fields_are_rebuilt_as_the_json_list() -> None:
    data = [("prompt", "x"), ("lora[][name]", "ink"), ("lora[][scale]", "0.5"), ("lora[][name]", "sketch")]
    data.append(("lora[][scale]", "1.5"))
    fields, _, _ = parse(data)
    assert fields["lora"] == [{"name": "ink", "scale": "0.5"}, {"name": "sketch", "scale": "1.5"}]
    params = parse_form_fields(fields)
    assert [(ref.name, ref.scale) for ref in params.lora] == [("ink", 0.5), ("sketch", 1.5)]
    fields, _, _ = parse([("prompt", "x"), ("lora[][name]", "ink"), ("lora[][name]", "sketch")])
    assert fields["lora"] == [{"name": "ink"}, {"name": "sketch"}]


@pytest.mark.parametrize(
    "data",
    [
        [("lora[][name]", "ink"), ("lora[][name]", "sketch"), ("lora[][scale]", "0.5")],
        [("lora[][scale]", "0.5")],
        [("lora", "ink"), ("lora[][name]", "sketch")],
    ],
    ids=["a scale missing", "a scale without a name", "both spellings"],
)
def test_lora_fields_that_do_not_pair_are_refused(data: list) -> None:
    err = refused([("prompt", "x"), *data])
    assert (err.param, err.code) == ("lora", "invalid_value")


def test_a_field_sent_twice_is_refused_by_its_name() -> None:
    err = refused([("prompt", "a"), ("prompt", "b")])
    assert (err.param, err.code) == ("prompt", "invalid_value")
    mask = ("mask", ("m.png", b"m", "image/png"))
    err = refused({"prompt": "x"}, [mask, mask])
    assert (err.param, err.code) == ("mask", "invalid_value")


def test_a_file_where_text_belongs_is_refused_by_its_name() -> None:
    err = refused({"prompt": "x"}, [("seed", ("s.txt", b"5", "text/plain"))])
    assert (err.param, err.code) == ("seed", "invalid_value")


def test_files_are_bounded_by_the_reference_limit_with_room_for_a_few_more() -> None:
    def images(count: int) -> list:
        return [("image[]", (f"{i}.png", b"x", "image/png")) for i in range(count)]

    allowed = LIMITS.max_reference_images + EXTRA_FILES
    assert len(parse({"prompt": "x"}, images(allowed))[1]) == allowed  # the count itself is serving.py's to judge
    err = refused({"prompt": "x"}, images(allowed + 1))
    assert (err.param, err.code) == (None, "invalid_multipart")


def test_text_fields_are_bounded() -> None:
    err = refused([(f"f{i}", "x") for i in range(MAX_TEXT_FIELDS + 1)])
    assert (err.param, err.code) == (None, "invalid_multipart")


def test_a_text_part_over_the_body_limit_is_refused() -> None:
    """Starlette bounds text parts by ``max_part_size``; files are bounded by the body's own limit, read before."""
    prompt = "x" * 1024
    assert parse({"prompt": prompt}, limits=Limits(max_body_bytes=1024))[0] == {"prompt": prompt}
    err = refused({"prompt": prompt}, limits=Limits(max_body_bytes=1023))
    assert err.code == "invalid_multipart"


def test_a_form_without_a_boundary_is_refused() -> None:
    body, _ = encoded({"prompt": "x"})
    with pytest.raises(InvalidRequest) as err:
        asyncio.run(parse_edit_form(body, "multipart/form-data", LIMITS))
    assert err.value.code == "invalid_multipart" and "boundary" in err.value.message
