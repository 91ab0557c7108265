"""``preset: fast``: one line of config for the fastest options this model and GPU run.

The preset keeps the step count and caches no steps: what it turns on changes the image only by rounding
(fp8 linears, fp8 attention), and docs/benchmarks.md measures by how much. It is resolved once, after
loading, because what runs depends on the GPU, the installed packages and the pipeline class; an option
that cannot run here is left at its default with a warning naming why, and a key the config sets itself
always wins over the preset.
"""

from __future__ import annotations

import logging
from typing import Any

from deployments.config import ModelConfig
from deployments.engine.attention import FA3_NOT_SPLIT, fa3_pipeline_reason, fa3_unsupported_reason
from deployments.engine.fp8 import fp8_unsupported_reason
from deployments.engine.load import LoadedPipeline

logger = logging.getLogger(__name__)

PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "fast": {"quantization": "fp8", "attention_backend": "fa3_fp8"},
}


def why_not(key: str, loaded: LoadedPipeline, split_over_ranks: bool) -> str | None:
    """Why the preset's value for ``key`` cannot run on this model and device (None: it can)."""
    if key == "quantization":
        return fp8_unsupported_reason(loaded.device)
    if key == "attention_backend":
        if split_over_ranks:
            return FA3_NOT_SPLIT
        return fa3_pipeline_reason(loaded.pipeline) or fa3_unsupported_reason(loaded.device)
    raise KeyError(key)


def resolve_preset(config: ModelConfig, loaded: LoadedPipeline, *, split_over_ranks: bool = False) -> ModelConfig:
    """``config`` with its preset's options filled in where they run; explicitly set keys are kept."""
    chosen: dict[str, Any] = {}
    for key, value in PRESETS[config.preset].items():
        if key in config.model_fields_set:
            logger.info("preset %s: %s=%r is set in the config and stays", config.preset, key, getattr(config, key))
            continue
        reason = why_not(key, loaded, split_over_ranks)
        if reason:
            logger.warning("preset %s: %s stays %r: %s", config.preset, key, getattr(config, key), reason)
        else:
            chosen[key] = value
    if chosen:
        logger.info("preset %s on %s: %s", config.preset, loaded.device, chosen)
    return config.model_copy(update=chosen)
