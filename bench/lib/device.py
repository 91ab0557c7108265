"""The device a suite measures on: whether it is a GPU, waiting for it, freeing and reading its memory, and how
busy it keeps (torch is imported where it is used, so a suite's ``--help`` stays quick)."""

from __future__ import annotations

import gc
import statistics
import threading
import time
from typing import Any


def cuda_ok() -> bool:
    import torch

    return torch.cuda.is_available()


def sync() -> None:
    """Wait for the device's queued work, so a host clock read after it covers that work (no-op on a CPU)."""
    import torch

    if cuda_ok():
        torch.cuda.synchronize()


def free_cuda() -> None:
    """Drop what the last measurement left, so the next one starts from the same memory."""
    import torch

    gc.collect()
    if cuda_ok():
        torch.cuda.empty_cache()


def gib(nbytes: float) -> float:
    return round(nbytes / 2**30, 2)


def peak_vram_gib() -> float:
    """The allocator's peak since the last ``reset_peak_memory_stats`` (0 on a CPU)."""
    import torch

    return gib(torch.cuda.max_memory_allocated()) if cuda_ok() else 0.0


class GpuUtilSampler:
    """NVML GPU utilisation (percent of the time a kernel ran), read every ``period_s`` on a background
    thread while entered."""

    def __init__(self, period_s: float = 0.05):
        self.period_s = period_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def __enter__(self) -> GpuUtilSampler:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception as exc:
            self.error = repr(exc)[:200]
            return self

        def loop() -> None:
            while not self._stop.is_set():
                self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                time.sleep(self.period_s)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def result(self) -> dict[str, Any]:
        if not self.samples:
            return {"error": self.error or "no samples"}
        mean = statistics.fmean(self.samples)
        return {
            "samples": len(self.samples),
            "mean_util_pct": round(mean, 1),
            "idle_fraction": round(1 - mean / 100, 3),
        }
