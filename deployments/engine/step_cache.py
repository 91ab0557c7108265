"""Step caching: reuse transformer work across denoising steps (diffusers' cache hooks).

- ``taylorseer``: TaylorSeer forecasts skipped steps' block outputs from a Taylor expansion of
  recent ones (``cache_interval``, ``disable_cache_before_step``, ... in ``step_cache_options``).
- ``magcache``: skips blocks while the accumulated residual-magnitude error stays under ``threshold``;
  needs checkpoint-specific ``mag_ratios`` (run once with ``{"calibrate": true}`` and copy the ratios
  it logs). Its schedule is built for ``default_steps``.

The dev pipeline runs its transformer outside any cache context, so its call is wrapped in one;
klein's pipeline opens its own. A request can switch the cache off for itself (``step_cache: false``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from diffusers import MagCacheConfig, TaylorSeerCacheConfig

from deployments.config import ModelConfig


def cache_config(config: ModelConfig, default_steps: int) -> Any | None:
    options = dict(config.step_cache_options)
    if config.step_cache == "taylorseer":
        return TaylorSeerCacheConfig(**options)
    if config.step_cache == "magcache":
        options.setdefault("num_inference_steps", default_steps)
        return MagCacheConfig(**options)
    return None


def cache_hook_targets(transformer: Any, config: ModelConfig) -> set[Any]:
    """The modules the configured step cache will hook (attached once, listed, detached again).

    Regional compile needs them: a compiled region must not contain a cache hook, whose per-step Python
    state dynamo cannot trace (see ``optimize.compile_blocks``). Placement does not depend on steps.
    """
    cache = cache_config(config, default_steps=config.default_steps or 50)
    if cache is None:
        return set()
    transformer.enable_cache(cache)
    try:
        return {module for module in transformer.modules() if getattr(module, "_diffusers_hook", None)}
    finally:
        transformer.disable_cache()


class StepCache:
    """Owns the cache hooks of one transformer and scopes them to each pipeline call."""

    def __init__(self, pipeline: Any, family: str, config: ModelConfig, default_steps: int):
        self.pipeline = pipeline
        self.family = family
        self.config = cache_config(config, default_steps)
        if self.config is not None:
            pipeline.transformer.enable_cache(self.config)

    @property
    def enabled(self) -> bool:
        return self.config is not None

    @contextlib.contextmanager
    def scope(self, wanted: bool | None) -> Iterator[bool]:
        """Run one pipeline call with the cache on (default) or off (``wanted=False``); yields whether it is on."""
        transformer = self.pipeline.transformer
        if not self.enabled:
            yield False
            return
        if wanted is False:
            transformer.disable_cache()
            try:
                yield False
            finally:
                transformer.enable_cache(self.config)
            return
        context = transformer.cache_context("cond") if self.family == "dev" else contextlib.nullcontext()
        with context:
            yield True
