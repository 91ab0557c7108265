"""Time on the device's own clock, and the statistics every suite reports its times with.

A GPU runs what the host queued: CUDA events recorded on its stream time the work itself, and one sync at the
end lets the host queue the next call while the device runs this one. On a CPU the host clock stands in.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.lib.device import cuda_ok, sync


def mark() -> Any:
    """A point in time on the device's stream: a recorded CUDA event, or the host clock on a CPU."""
    if cuda_ok():
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event
    return time.perf_counter()


def elapsed_ms(start: Any, end: Any) -> float:
    """Milliseconds between two :func:`mark` s (synchronize first on a GPU)."""
    return start.elapsed_time(end) if cuda_ok() else (end - start) * 1e3


def timed_calls(call: Callable[[], Any], n: int) -> list[float]:
    """Milliseconds of each of ``n`` calls run back to back: marks around each, one sync at the end, so the
    host queues the next call while the device runs this one."""
    spans = []
    for _ in range(n):
        start = mark()
        call()
        spans.append((start, mark()))
    sync()
    return [elapsed_ms(start, end) for start, end in spans]


def pct(values: list[float], q: float) -> float:
    """Percentile with linear interpolation (numpy's default)."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(pct(values, 50), 4),
        "p95": round(pct(values, 95), 4),
        "mean": round(statistics.fmean(values), 4) if values else float("nan"),
        "min": round(min(values), 4) if values else float("nan"),
        "max": round(max(values), 4) if values else float("nan"),
    }
