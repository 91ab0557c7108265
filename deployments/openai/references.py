"""Decoded reference images, kept by each ingress replica by a digest of their file: the same file sent again is not
decoded again (a 1024x1024 JPEG or PNG costs tens of ms).

Exact: a file's pixels are what the one guarded decoder (:func:`~deployments.openai.images.decode_image`) made of
those very bytes, and the size checks that depend on the limits run again on a hit, since the limits may have
changed. Kept arrays are read-only, so no later step can alter what another request gets. The PNGs this replica
encodes as results are kept too: the writer is lossless, so their decode is exactly the array they were made from,
and an edit of the previous result (the playground's "Edit this result") sends those bytes back. Each replica has
its own cache: a file sent to another replica is decoded there once.
"""

from __future__ import annotations

import numpy as np

from deployments.caching import MB, ByteLRU, content_digest
from deployments.config import Limits
from deployments.openai.images import check_decoded, decode_image
from deployments.types import CacheStats


class ReferenceCache:
    """Decoded pixels by file digest, least recently used evicted past ``capacity_mb`` MiB (0: decodes every time).
    Thread-safe: requests decode on worker threads."""

    def __init__(self, capacity_mb: int) -> None:
        self._pixels: ByteLRU[np.ndarray] = ByteLRU(capacity_mb * MB)

    def resize(self, capacity_mb: int) -> None:
        self._pixels.resize(capacity_mb * MB)

    @property
    def stats(self) -> CacheStats:
        return self._pixels.stats

    def decode(self, data: bytes, limits: Limits, param: str) -> np.ndarray:
        """``decode_image(data, limits, param)``, read-only: decoded once, then taken from the cache."""
        if not self._pixels.capacity_bytes:
            return decode_image(data, limits, param)
        key = content_digest(data)
        pixels = self._pixels.get(key)
        if pixels is not None:
            check_decoded(pixels, limits, param)
            return pixels
        pixels = decode_image(data, limits, param)  # raises on bad bytes: nothing is kept for them
        self._keep(key, pixels)
        return pixels

    def register(self, png: bytes, pixels: np.ndarray) -> None:
        """``png`` is this replica's lossless encoding of ``pixels``: a client that sends it back gets them as is."""
        if self._pixels.capacity_bytes:
            self._keep(content_digest(png), np.array(pixels, copy=True))  # owned, not a view of a Ray buffer

    def _keep(self, key: bytes, pixels: np.ndarray) -> None:
        pixels.setflags(write=False)
        self._pixels.put(key, pixels, pixels.nbytes)
