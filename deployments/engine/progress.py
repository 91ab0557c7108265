"""Per-step progress, cheap previews and cancellation, hooked into the pipelines' step callback."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from deployments.engine.pipeline_call import StepCallback, decode_latents
from deployments.types import PartialImage, StepProgress


class GenerationCancelled(Exception):
    """The client went away; the run stopped at the end of the current step."""


def preview_steps(total: int, partial_images: int) -> list[int]:
    """The steps (1-based) after which a preview is sent: evenly spread, never the last step."""
    return sorted({max(1, round((i + 1) * total / (partial_images + 1))) for i in range(partial_images)} - {total})


def decode_preview(pipeline: Any, latents: torch.Tensor, width: int, height: int) -> np.ndarray:
    """Decode the first image's current packed latents (tokens in row-major grid order) to uint8 RGB."""
    grid_h, grid_w = height // (pipeline.vae_scale_factor * 2), width // (pipeline.vae_scale_factor * 2)
    tokens = latents[:1]
    packed = tokens.reshape(1, grid_h, grid_w, tokens.shape[-1]).permute(0, 3, 1, 2)
    image = decode_latents(pipeline, packed)
    pixels = ((image[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(1, 2, 0).cpu().numpy()


@dataclass
class StepReporter:
    """``callback_on_step_end`` for the pipelines: reports each step, sends previews, honours cancellation.

    ``emit`` is called on the engine thread; it must be cheap and thread-safe.
    """

    emit: Callable[[object], None] | None = None
    partial_images: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    width: int = 0
    height: int = 0
    total: int = 0
    _started: float = field(default_factory=time.perf_counter)
    _previews: list[int] = field(default_factory=list)

    def start(self, total: int, width: int, height: int) -> None:
        self.total, self.width, self.height = total, width, height
        self._previews = preview_steps(total, self.partial_images)
        self._started = time.perf_counter()

    def raise_if_cancelled(self) -> None:
        if self.cancel.is_set():
            raise GenerationCancelled

    def __call__(self, pipeline: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        self.raise_if_cancelled()
        if self.emit is not None:
            done = step + 1
            self.emit(StepProgress(step=done, num_steps=self.total, elapsed_s=time.perf_counter() - self._started))
            if done in self._previews:
                image = decode_preview(pipeline, callback_kwargs["latents"], self.width, self.height)
                self.emit(PartialImage(index=self._previews.index(done), image=image))
        return {}


def chain(callbacks: Sequence[StepCallback | None]) -> StepCallback | None:
    """One step callback running several in order; each sees the tensors the previous one returned."""
    active = [callback for callback in callbacks if callback is not None]
    if len(active) <= 1:
        return active[0] if active else None

    def run_all(pipeline: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        merged: dict = {}
        for callback in active:
            outputs = callback(pipeline, step, timestep, {**callback_kwargs, **merged})
            merged.update(outputs or {})
        return merged

    return run_all
