"""The service's errors as a client meets them: a status, the OpenAI error object and the headers they call for.

``deployments.errors`` says what went wrong (a class, a parameter, a code) and knows no HTTP; this module is the
one place that turns it into a response. The body is built from ``ErrorResponse``, the model OpenAPI lists for
every route, so the schema and what is sent cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from deployments.errors import (
    BodyTimeout,
    DeadlineExceeded,
    Flux2Error,
    GenerationFailed,
    InvalidRequest,
    NotFound,
    Overloaded,
    Retryable,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from deployments.openai.protocol import ErrorBody, ErrorResponse

# The one table from error class to HTTP status. Subclasses come before their base class.
STATUS: tuple[tuple[type[Flux2Error], int], ...] = (
    (InvalidRequest, 400),
    (Unauthorized, 401),
    (NotFound, 404),
    (TooLarge, 413),
    (UnsupportedMediaType, 415),
    (Overloaded, 503),
    (Unavailable, 503),
    (GenerationFailed, 500),
    (DeadlineExceeded, 504),
    (BodyTimeout, 408),
)

# What OpenAPI lists for every route: the statuses of STATUS, and 500 for the unexpected.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in sorted({status for _, status in STATUS} | {500})
}

# Starlette answers these itself (no such route, a method the route does not take): their codes.
ROUTING_CODES = {404: "not_found", 405: "method_not_allowed"}


def status_of(err: Flux2Error) -> int:
    return next((status for cls, status in STATUS if isinstance(err, cls)), 500)


def error_body(err: Flux2Error) -> ErrorBody:
    """The OpenAI error object: the one shape of every error, answered or streamed."""
    kind = "invalid_request_error" if status_of(err) < 500 else "server_error"
    return ErrorBody(message=err.message, type=kind, param=err.param, code=err.code)


def error_response(err: Flux2Error) -> JSONResponse:
    """The error object with the status and the headers the error's meaning calls for."""
    headers = {}
    if isinstance(err, Retryable):
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after_s)))
    if isinstance(err, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(err, BodyTimeout):
        headers["Connection"] = "close"  # the rest of the body may still come: the connection cannot be reused
    return _json(error_body(err), status_of(err), headers)


def routing_error_response(status: int, detail: str, headers: Mapping[str, str] | None) -> JSONResponse:
    """Starlette's own refusals (unknown route 404, wrong method 405 with its Allow header) in the same shape."""
    body = ErrorBody(message=detail, type="invalid_request_error", code=ROUTING_CODES.get(status))
    return _json(body, status, headers)


def _json(body: ErrorBody, status: int, headers: Mapping[str, str] | None) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=body).model_dump(mode="json"), status_code=status, headers=headers)
