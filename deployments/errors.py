"""Errors the service raises: a message, the parameter at fault and a stable code; no transport.

The engine, the model server and the request builders raise these. Only the ingress layer knows HTTP:
``deployments.openai.errors`` maps each class to a status (``STATUS``) and renders the one OpenAI error shape.
The errors survive Ray's process boundary with their fields intact.
"""

from __future__ import annotations

from typing import Any


class Flux2Error(Exception):
    """Base class: ``param`` names the request field at fault (or None), ``code`` is machine-readable."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def __reduce__(self):  # keep the fields across Ray's process boundary
        return (_restore, (type(self), dict(self.__dict__)))


def _restore(cls: type[Flux2Error], state: dict[str, Any]) -> Flux2Error:
    err = Exception.__new__(cls)
    Exception.__init__(err, state["message"])
    err.__dict__.update(state)
    return err


class InvalidRequest(Flux2Error):
    """The request is wrong as sent: a field's value, a missing field, an undecodable image."""


class Unauthorized(Flux2Error):
    """No valid API key was presented."""


class NotFound(Flux2Error):
    """The named model, adapter or route does not exist."""


class TooLarge(Flux2Error):
    """The body or a decoded image is over a configured limit."""


class UnsupportedMediaType(Flux2Error):
    """The body's content type is not the one the route takes."""


class Retryable(Flux2Error):
    """The request was fine but cannot be served now; ``retry_after_s`` says when to try again."""

    def __init__(self, message: str, *, retry_after_s: float, code: str, param: str | None = None) -> None:
        super().__init__(message, param=param, code=code)
        self.retry_after_s = retry_after_s


class Overloaded(Retryable):
    """Out of capacity: the queue is full or the GPU ran out of memory even after recovery."""


class Unavailable(Retryable):
    """No healthy replica can take the request: none running yet, or the one serving it died."""


class DeadlineExceeded(Flux2Error):
    """The generation did not finish within the configured time."""


class BodyTimeout(Flux2Error):
    """The client did not send its request body within the configured time: it is slow or idle."""


class GenerationFailed(Flux2Error):
    """The model failed for a reason that is not the request's fault."""
