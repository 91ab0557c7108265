"""Step caching (TaylorSeer, MagCache) on the tiny models: on per model, off per request, deviation bounded."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from deployments.config import ModelConfig
from deployments.engine import Flux2Engine
from deployments.types import ImageRequest

REQUEST = ImageRequest(prompt="a cat", width=128, height=128, seed=3, num_inference_steps=12)
TAYLOR = {"cache_interval": 3, "disable_cache_before_step": 4}


def deviation(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Relative L2 error and cosine similarity of two images (as floats centred on grey)."""
    x, y = a.astype(np.float64).ravel() - 127.5, b.astype(np.float64).ravel() - 127.5
    return float(np.linalg.norm(x - y) / np.linalg.norm(y)), float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


@pytest.mark.parametrize("source", ["tiny-dev", "tiny-klein"])
def test_taylorseer_runs_and_stays_close_to_uncached(source: str) -> None:
    plain = Flux2Engine.from_config(ModelConfig(source=source)).generate(REQUEST)
    cached = Flux2Engine.from_config(
        ModelConfig(source=source, step_cache="taylorseer", step_cache_options=TAYLOR)
    ).generate(REQUEST)
    assert cached.step_cache and not plain.step_cache
    rel_l2, cosine = deviation(cached.images[0], plain.images[0])
    assert rel_l2 < 0.05 and cosine > 0.99, (rel_l2, cosine)


def test_request_can_switch_the_cache_off() -> None:
    engine = Flux2Engine.from_config(ModelConfig(source="tiny-dev", step_cache="taylorseer", step_cache_options=TAYLOR))
    plain = Flux2Engine.from_config(ModelConfig(source="tiny-dev")).generate(REQUEST)
    off = engine.generate(ImageRequest(**{**REQUEST.__dict__, "step_cache": False}))
    assert not off.step_cache and np.array_equal(off.images[0], plain.images[0])
    assert engine.generate(REQUEST).step_cache  # and back on for the next request


def test_magcache_needs_ratios_or_calibration() -> None:
    with pytest.raises(ValueError, match="mag_ratios"):
        Flux2Engine.from_config(ModelConfig(source="tiny-klein", step_cache="magcache"))
    engine = Flux2Engine.from_config(
        ModelConfig(source="tiny-klein", step_cache="magcache", step_cache_options={"calibrate": True}, default_steps=6)
    )
    assert engine.generate(ImageRequest(prompt="a cat", width=64, height=64)).step_cache


def test_magcache_with_ratios_skips_and_stays_close() -> None:
    ratios = [1.0] + [0.98] * 11
    options = {"mag_ratios": ratios, "threshold": 0.1, "retention_ratio": 0.2}
    engine = Flux2Engine.from_config(
        ModelConfig(source="tiny-klein", step_cache="magcache", step_cache_options=options, default_steps=12)
    )
    cached = engine.generate(REQUEST)
    plain = Flux2Engine.from_config(ModelConfig(source="tiny-klein")).generate(REQUEST)
    rel_l2, cosine = deviation(cached.images[0], plain.images[0])
    assert cached.step_cache and not np.array_equal(cached.images[0], plain.images[0])  # it did skip work
    assert rel_l2 < 0.05 and cosine > 0.99, (rel_l2, cosine)


@pytest.mark.background
def test_taylorseer_composes_with_regional_compile(compile_cache) -> None:
    """The cache hooks stay out of the compiled regions: no graph break, same output as the eager cache."""
    torch._dynamo.reset()
    options = {"step_cache": "taylorseer", "step_cache_options": TAYLOR, "compile_cache_dir": str(compile_cache)}
    options |= {"compile_vae": False, "compile_text_encoder": False}  # only the transformer matters here
    try:
        eager = Flux2Engine.from_config(ModelConfig(source="tiny-dev", compile="none", **options))
        compiled = Flux2Engine.from_config(ModelConfig(source="tiny-dev", compile="regional", **options))
        attention = [block.attn for block in compiled.pipeline.transformer.transformer_blocks]
        assert all(isinstance(a.forward, functools.partial) for a in attention), "cache hooks are not installed"
        want, got = eager.generate(REQUEST), compiled.generate(REQUEST)
        assert got.step_cache
        assert np.abs(want.images[0].astype(int) - got.images[0].astype(int)).max() <= 2
        assert compiled.generate(ImageRequest(**{**REQUEST.__dict__, "step_cache": False})).images[0].shape
    finally:
        torch._dynamo.reset()
