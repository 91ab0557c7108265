"""Reference-image KV caching (Flux2KleinKVPipeline): references' K/V computed at the first step, reused after."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deployments.config import ModelConfig
from deployments.engine import Flux2Engine
from deployments.engine.synthetic.tiny import build_tiny_klein_kv
from deployments.types import ImageRequest

REFS = tuple(np.random.default_rng(i).integers(0, 256, (64, 80, 3), dtype=np.uint8) for i in range(2))


def test_kv_edit_runs_and_stays_close_to_the_plain_pipeline() -> None:
    kv = Flux2Engine.from_config(ModelConfig(source="tiny-klein-kv"))
    plain = Flux2Engine.from_config(ModelConfig(source="tiny-klein"))
    assert not kv.takes_guidance and kv.info.family == "klein"
    for refs in (REFS[:1], REFS):
        request = ImageRequest(prompt="put the dog in the car", width=80, height=64, images=refs, seed=4)
        cached, reference = kv.generate(request), plain.generate(request)
        assert cached.images[0].shape == (64, 80, 3)
        assert np.array_equal(cached.images[0], kv.generate(request).images[0])  # deterministic
        assert np.abs(cached.images[0].astype(int) - reference.images[0].astype(int)).mean() < 2.0


def test_kv_text_to_image_equals_the_plain_pipeline() -> None:
    request = ImageRequest(prompt="a cat", width=64, height=64, seed=9)
    kv = Flux2Engine.from_config(ModelConfig(source="tiny-klein-kv")).generate(request)
    plain = Flux2Engine.from_config(ModelConfig(source="tiny-klein")).generate(request)
    assert np.array_equal(kv.images[0], plain.images[0])  # no references: nothing to cache


def test_kv_masked_edit(tmp_path: Path) -> None:
    mask = np.zeros((64, 80), bool)
    mask[:, :40] = True
    request = ImageRequest(prompt="a dog", width=80, height=64, images=REFS[:1], mask=mask, seed=2)
    result = Flux2Engine.from_config(ModelConfig(source="tiny-klein-kv")).generate(request)
    assert result.mask_applied and np.array_equal(result.images[0][:, 48:], REFS[0][:, 48:])


def test_kv_checkpoint_folder_loads_as_kv_pipeline(tmp_path: Path) -> None:
    build_tiny_klein_kv().save_pretrained(tmp_path)
    engine = Flux2Engine.from_config(ModelConfig(source=str(tmp_path), device="cpu"))
    assert type(engine.pipeline).__name__ == "Flux2KleinKVPipeline" and engine.info.weights == "pretrained"
    result = engine.generate(ImageRequest(prompt="a cat", width=64, height=64, images=REFS[:1], num_inference_steps=2))
    assert result.images[0].shape == (64, 64, 3)
