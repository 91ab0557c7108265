"""VRAM policy: when to return cached blocks to the driver, and recovery from CUDA out-of-memory.

Policies, applied after each request:
- ``always``: ``gc.collect()`` + ``torch.cuda.empty_cache()`` every time (the seed system's fix; costs
  allocator re-warming on the next request).
- ``on_pressure``: only when reserved memory exceeds ``pressure_fraction`` of the card.
- ``never``: keep the caching allocator's blocks.

An OOM inside a request frees memory and retries the request once; a second OOM raises
:class:`~deployments.errors.Overloaded` (retryable) and leaves the engine usable.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable
from typing import TypeVar

import torch

from deployments.errors import Overloaded

logger = logging.getLogger(__name__)
T = TypeVar("T")

ALLOCATOR_SETTINGS = "expandable_segments:True"


def configure_allocator() -> None:
    """Ask for expandable segments (less fragmentation across shapes) unless the user chose otherwise.

    Must run before the first CUDA allocation of the process; a no-op after it.
    """
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", ALLOCATOR_SETTINGS)


class MemoryManager:
    """Applies the VRAM policy around requests and counts what it did."""

    def __init__(
        self,
        device: torch.device,
        policy: str = "on_pressure",
        pressure_fraction: float = 0.9,
        on_oom: Callable[[], None] = lambda: None,
    ):
        """``on_oom`` drops what the owner can recompute (its caches) before the retry."""
        self.device = device
        self.policy = policy
        self.pressure_fraction = pressure_fraction
        self.on_oom = on_oom
        self.oom_recoveries = 0
        self.cache_releases = 0

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def release(self) -> None:
        gc.collect()
        if self.is_cuda:
            torch.cuda.empty_cache()
        self.cache_releases += 1

    def under_pressure(self) -> bool:
        if not self.is_cuda:
            return False
        total = torch.cuda.get_device_properties(self.device).total_memory
        return torch.cuda.memory_reserved(self.device) > self.pressure_fraction * total

    def after_request(self) -> None:
        if self.policy == "always" or (self.policy == "on_pressure" and self.under_pressure()):
            self.release()

    def check_device(self) -> None:
        """Ask the driver for free memory, which it answers without waiting for queued kernels: a lost or broken
        device raises here, a busy one does not."""
        if self.is_cuda:
            torch.cuda.mem_get_info(self.device)

    def reset_peak(self) -> None:
        if self.is_cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_bytes(self) -> int:
        return torch.cuda.max_memory_allocated(self.device) if self.is_cuda else 0

    def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn``; on OOM free memory and retry once, then give up with a retryable error."""
        try:
            return fn()
        except torch.OutOfMemoryError:
            logger.warning("CUDA out of memory: releasing cached memory and retrying once")
        self.oom_recoveries += 1
        self.on_oom()
        self.release()
        try:
            return fn()
        except torch.OutOfMemoryError as exc:
            self.release()
            raise Overloaded(
                "the GPU ran out of memory for this request; retry later or ask for a smaller size or fewer images",
                retry_after_s=5,
                code="gpu_out_of_memory",
            ) from exc
