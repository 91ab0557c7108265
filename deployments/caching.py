"""Exact caches: an LRU bounded in bytes, and the content digests that key it.

No torch, no Ray, no HTTP: the ingress (decoded references) and the engine (prompt embeddings, reference latents)
share it. A cache here only ever returns what a miss would have computed, so it changes no output.

Digests are SHA-256: with the SHA instructions of current server CPUs it hashed 3 MB in 2.7 ms where BLAKE2b took
7.3 ms (this repository's 2-core test machine), and a shared cache needs a digest nobody can make collide.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

import numpy as np

from deployments.types import CacheStats

MB = 2**20
V = TypeVar("V")


def content_digest(data: bytes | memoryview) -> bytes:
    """The digest of a file's bytes."""
    return hashlib.sha256(data).digest()


def pixel_digest(pixels: np.ndarray) -> bytes:
    """The digest of an image's pixels: shape, dtype and the bytes in C order (equal pixels, equal digests)."""
    digest = hashlib.sha256(f"{pixels.shape}{pixels.dtype.str}".encode())
    digest.update(np.ascontiguousarray(pixels).data)
    return digest.digest()


class ByteLRU(Generic[V]):
    """Values by key, the least recently used evicted once their sizes pass ``capacity_bytes`` (0: keeps nothing).

    Thread-safe: the ingress decodes and encodes on worker threads. A value larger than the whole capacity is not
    kept.
    """

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._stats = CacheStats()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        """The value, now the most recently used; counted as a hit or a miss (nothing is counted while off)."""
        if not self.capacity_bytes:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._stats.misses += 1
                return None
            self._entries.move_to_end(key)
            self._stats.hits += 1
            return entry[0]

    def put(self, key: Hashable, value: V, size: int) -> None:
        with self._lock:
            if key in self._entries:
                self._stats.bytes -= self._entries.pop(key)[1]
            if size <= self.capacity_bytes:
                self._entries[key] = (value, size)
                self._stats.bytes += size
            self._evict()

    def resize(self, capacity_bytes: int) -> None:
        """A new bound, applied now: what no longer fits is evicted (least recently used first)."""
        with self._lock:
            self.capacity_bytes = capacity_bytes
            self._evict()

    def clear(self) -> None:
        """Drop every value (counted as evictions), e.g. to give their memory back after an out-of-memory error."""
        with self._lock:
            self._stats.evictions += len(self._entries)
            self._entries.clear()
            self._stats.bytes = 0

    @property
    def stats(self) -> CacheStats:
        """A snapshot of the counters and of what is held."""
        with self._lock:
            return dataclasses.replace(self._stats, entries=len(self._entries))

    def _evict(self) -> None:
        while self._stats.bytes > self.capacity_bytes:
            _, (_, size) = self._entries.popitem(last=False)
            self._stats.bytes -= size
            self._stats.evictions += 1
