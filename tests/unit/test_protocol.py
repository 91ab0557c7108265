"""Request bodies to typed requests: where a validation error points and which code it carries."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from deployments.errors import InvalidRequest
from deployments.openai.protocol import parse_form_fields, parse_json_body

NESTED_BAD_TYPE: list[Callable[[], object]] = [
    lambda: parse_json_body(b'{"prompt": "x", "lora": ["x"]}'),
    lambda: parse_form_fields({"prompt": "x", "lora": ["x"]}),
]


@pytest.mark.parametrize("parse", NESTED_BAD_TYPE, ids=["json", "form"])
def test_a_nested_value_of_the_wrong_type_is_a_bad_value_of_its_field(parse: Callable[[], object]) -> None:
    """``"lora": ["x"]`` is an object body with a bad adapter in it, not a body that is not an object."""
    with pytest.raises(InvalidRequest) as err:
        parse()
    assert (err.value.code, err.value.param) == ("invalid_value", "lora.0")
    assert err.value.message.startswith("Invalid value for 'lora.0'")


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"null", b"{nope", b"[" * 100_000])
def test_a_body_that_is_not_a_json_object_is_invalid_json(body: bytes) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_json_body(body)
    assert (err.value.code, err.value.param) == ("invalid_json", None)
    assert err.value.message.startswith("Request body must be a JSON object")
