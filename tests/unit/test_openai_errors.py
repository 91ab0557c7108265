"""deployments/openai/errors.py: the status table, the OpenAI error object and the headers of an error response."""

from __future__ import annotations

import inspect
import json

import pytest

from deployments import errors
from deployments.errors import (
    BodyTimeout,
    Flux2Error,
    InvalidRequest,
    Overloaded,
    Retryable,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from deployments.openai.errors import (
    ERROR_RESPONSES,
    STATUS,
    error_body,
    error_response,
    routing_error_response,
    status_of,
)
from deployments.openai.protocol import ErrorResponse

ERROR_CLASSES = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, Flux2Error) and cls not in (Flux2Error, Retryable)
]


def make(cls: type[Flux2Error]) -> Flux2Error:
    if issubclass(cls, Retryable):
        return cls("try later", retry_after_s=2.5, code="busy")
    return cls("bad", param="size", code="invalid_value")


def test_every_error_class_has_its_own_row_and_no_row_is_shadowed() -> None:
    """A row listed after its base class would never match: each class gets the status of its own row."""
    assert {cls for cls, _ in STATUS} == set(ERROR_CLASSES)
    for cls, status in STATUS:
        assert status_of(make(cls)) == status, cls.__name__


def test_an_error_outside_the_table_is_a_500() -> None:
    assert status_of(Flux2Error("?")) == 500
    assert status_of(Retryable("?", retry_after_s=1, code="x")) == 500


def test_openapi_lists_every_status_of_the_table_and_500() -> None:
    assert set(ERROR_RESPONSES) == {status for _, status in STATUS} | {500}
    assert all(entry == {"model": ErrorResponse} for entry in ERROR_RESPONSES.values())


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_the_body_is_the_schema_openapi_lists(cls: type[Flux2Error]) -> None:
    err = make(cls)
    response = error_response(err)
    body = json.loads(response.body)
    assert ErrorResponse.model_validate(body).error == error_body(err)
    assert list(body["error"]) == ["message", "type", "param", "code"]
    assert (body["error"]["message"], body["error"]["param"], body["error"]["code"]) == (
        err.message,
        err.param,
        err.code,
    )
    assert body["error"]["type"] == ("invalid_request_error" if response.status_code < 500 else "server_error")


@pytest.mark.parametrize(("after_s", "header"), [(0.2, "1"), (2.0, "2"), (2.1, "3")])
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one(after_s: float, header: str) -> None:
    for cls in (Overloaded, Unavailable):
        response = error_response(cls("busy", retry_after_s=after_s, code="busy"))
        assert response.status_code == 503 and response.headers["retry-after"] == header


def test_headers_follow_the_errors_meaning() -> None:
    unauthorized = error_response(Unauthorized("no key", code="invalid_api_key"))
    assert unauthorized.status_code == 401 and unauthorized.headers["www-authenticate"] == "Bearer"
    slow = error_response(BodyTimeout("too slow", code="body_timeout"))
    assert slow.status_code == 408 and slow.headers["connection"] == "close"
    for err in (InvalidRequest("bad", param="n"), TooLarge("big")):
        headers = error_response(err).headers
        assert not {"retry-after", "www-authenticate", "connection"} & set(headers)


def test_routing_errors_take_the_same_shape_and_keep_their_headers() -> None:
    response = routing_error_response(405, "Method Not Allowed", {"Allow": "POST"})
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    error = ErrorResponse.model_validate_json(response.body).error
    assert (error.type, error.param, error.code) == ("invalid_request_error", None, "method_not_allowed")
    assert ErrorResponse.model_validate_json(routing_error_response(404, "Not Found", None).body).error.code == (
        "not_found"
    )
