"""Optional API keys: ``Authorization: Bearer <key>``, compared in constant time."""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from deployments.config import AuthConfig
from deployments.errors import Unauthorized


def load_api_keys(auth: AuthConfig) -> tuple[str, ...]:
    """Keys from the config, the named environment variable (comma-separated) and a secret file (one a line)."""
    keys = list(auth.api_keys)
    if auth.api_keys_env:
        keys += os.environ.get(auth.api_keys_env, "").split(",")
    if auth.api_keys_file:
        keys += Path(auth.api_keys_file).read_text().splitlines()
    return tuple(key.strip() for key in keys if key.strip())


class ApiKeyCheck:
    """Admits any request when no key is configured, else only a request bearing one of the keys."""

    def __init__(self, keys: tuple[str, ...]):
        self._keys = tuple(key.encode() for key in keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def __call__(self, authorization: str | None) -> None:
        if not self._keys:
            return
        scheme, _, token = (authorization or "").partition(" ")
        presented = token.strip().encode() if scheme.lower() == "bearer" else b""
        # Compare against every key so the time taken does not reveal which one nearly matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(presented, key)
        if not matched:
            raise Unauthorized(
                "Incorrect or missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key"
            )
