"""Time inside real pipeline calls: every transformer forward (hooks, no re-compile) and each stage of a request,
so a suite splits its end-to-end figures without changing what runs; and a timed series of such requests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bench.lib.device import cuda_ok, peak_vram_gib, sync
from bench.lib.timing import elapsed_ms, mark, summary

if TYPE_CHECKING:
    import torch


class StepTimer:
    """CUDA-event timing of every transformer forward inside real pipeline calls (hooks, no re-compile)."""

    def __init__(self, transformer: torch.nn.Module):
        self.transformer = transformer
        self.pending: list[tuple[Any, Any]] = []
        self.capture_next = False
        self.captured: dict[str, Any] | None = None
        self._handles = [
            transformer.register_forward_pre_hook(self._pre, with_kwargs=True),
            transformer.register_forward_hook(self._post, with_kwargs=True),
        ]

    def _pre(self, module, args, kwargs):
        import torch

        if self.capture_next:  # a copy of one step's inputs, for numerical comparisons
            self.captured = {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        self.pending.append((mark(), None))

    def _post(self, module, args, kwargs, output):
        start, _ = self.pending[-1]
        self.pending[-1] = (start, mark())
        if self.capture_next:
            self.capture_next = False
            out = output[0] if isinstance(output, tuple) else output.sample
            self.captured_out = out.detach().float().clone()

    def take_ms(self) -> list[float]:
        sync()
        times = [elapsed_ms(start, end) for start, end in self.pending if end is not None]
        self.pending = []
        return times

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class StageTimer:
    """Time per pipeline stage inside real requests (CUDA events; host clock on CPU).

    Stages: the text encoder (``encode_prompt``), the VAE encoder (reference images), the VAE decoder,
    each wrapped as a method on the instance (outside any compiled region), and every transformer
    call through a :class:`StepTimer`. ``take_ms`` sums each stage since the last call.
    """

    STAGES = (("text_encoder", None, "encode_prompt"), ("vae_encode", "vae", "encode"), ("vae_decode", "vae", "decode"))

    def __init__(self, pipeline):
        self.steps = StepTimer(pipeline.transformer)
        self.step_ms: list[float] = []
        self.pending: dict[str, list[tuple[Any, Any]]] = {name: [] for name, _, _ in self.STAGES}
        self._wrapped = []
        for name, part, method in self.STAGES:
            owner = getattr(pipeline, part) if part else pipeline
            setattr(owner, method, self._wrap(name, getattr(owner, method)))
            self._wrapped.append((owner, method))

    def _wrap(self, name: str, original):
        def timed(*args, **kwargs):
            start = mark()
            result = original(*args, **kwargs)
            self.pending[name].append((start, mark()))
            return result

        return timed

    def take_ms(self) -> dict[str, float]:
        """Each stage's milliseconds since the last call; ``step_ms`` keeps the transformer's calls one by one."""
        sync()
        self.step_ms = self.steps.take_ms()
        totals = {"transformer": sum(self.step_ms)}
        for name, spans in self.pending.items():
            totals[name] = sum(elapsed_ms(start, end) for start, end in spans)
            spans.clear()
        return totals

    def remove(self) -> None:
        self.steps.remove()
        for owner, method in self._wrapped:
            delattr(owner, method)  # the class's method shows through again


def timed_series(call: Callable[[Any], Any], request_for: Callable[[int], Any], n: int, timer: StepTimer) -> dict:
    """One untimed request, then ``n`` timed ones: e2e latency, per-step transformer ms, peak VRAM."""
    import torch

    call(request_for(1000))
    timer.take_ms()
    latencies, steps_ms, peaks = [], [], []
    for i in range(n):
        if cuda_ok():
            torch.cuda.reset_peak_memory_stats()
        sync()
        start = time.perf_counter()
        call(request_for(i))
        sync()
        latencies.append(time.perf_counter() - start)
        peaks.append(peak_vram_gib())
        steps_ms.extend(timer.take_ms())
    return {"e2e_s": summary(latencies), "peak_vram_gib": max(peaks), "transformer_step_ms": summary(steps_ms)}
