"""The engine's exact caches on the tiny pipelines: prompt embeddings and reference latents give the bytes of a miss,
and of the pipeline called with ``prompt=`` and the PIL references as the engine called it before (real diffusers,
CPU, no mocks)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import Flux2KleinPipeline
from PIL import Image

from deployments.caching import MB, ByteLRU
from deployments.config import ModelConfig
from deployments.engine import Flux2Engine
from deployments.engine.load import LoadedPipeline
from deployments.engine.masking import resize_source, run_masked_edit
from deployments.engine.pipeline_call import call_pipeline, seed_generators
from deployments.engine.synthetic.tiny import build_tiny_klein, build_tiny_klein_kv
from deployments.types import ImageRequest

STEPS = 2


def references(count: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    sizes = [(64, 64), (96, 80)]
    return tuple(rng.integers(0, 256, (*sizes[i % 2], 3), dtype=np.uint8) for i in range(count))


def plain_call(engine: Flux2Engine, requests: list[ImageRequest], latents: Any = None, callback: Any = None) -> Any:
    """The pipeline call as the engine made it before the caches: prompts as text, references as PIL images."""
    first = requests[0]
    if len(requests) == 1:
        prompt, per_prompt = first.prompt, first.n
    else:
        prompt, per_prompt = [r.prompt for r in requests for _ in range(r.n)], 1
    guidance = {"guidance_scale": engine.default_guidance_scale} if engine.takes_guidance else {}
    with torch.inference_mode():
        return engine.pipeline(
            image=[Image.fromarray(image) for image in first.images] or None,
            prompt=prompt,
            height=first.height,
            width=first.width,
            num_inference_steps=STEPS,
            num_images_per_prompt=per_prompt,
            generator=seed_generators(requests),
            latents=latents,
            output_type="pt",
            callback_on_step_end=callback,
            **guidance,
        ).images


def cached_call(engine: Flux2Engine, requests: list[ImageRequest]) -> torch.Tensor:
    guidance = engine.default_guidance_scale if engine.takes_guidance else None
    conditioning = engine.conditioning
    keys = conditioning.reference_keys(requests[0].images)
    generators = seed_generators(requests)
    return call_pipeline(engine.pipeline, requests, STEPS, guidance, generators, conditioning, reference_keys=keys)


def engine_of(pipeline: Any, family: str = "klein", **config: Any) -> Flux2Engine:
    loaded = LoadedPipeline(pipeline, "tiny", family, "random-tiny", torch.device("cpu"), torch.float32)
    pipeline.set_progress_bar_config(disable=True)
    return Flux2Engine(loaded, ModelConfig(source="tiny-klein", **config))


@pytest.fixture(scope="module", params=["tiny-dev", "tiny-klein", "tiny-klein-kv", "klein-base"])
def engine(request: pytest.FixtureRequest) -> Iterator[Flux2Engine]:
    if request.param == "klein-base":  # CFG: two passes a step, the second on the empty prompt's embeddings
        yield engine_of(Flux2KleinPipeline(**build_tiny_klein().components, is_distilled=False))
    else:
        yield Flux2Engine.from_config(ModelConfig(source=request.param))


def exact_three_ways(engine: Flux2Engine, requests: list[ImageRequest]) -> None:
    """Miss, hit and the plain call: the same output, bit for bit."""
    engine.conditioning.clear()
    plain = plain_call(engine, requests)
    before = engine.conditioning.stats
    miss = cached_call(engine, requests)
    encodes: list[int] = []  # text encoder passes, klein-base's empty negative prompt included
    hook = engine.pipeline.text_encoder.register_forward_pre_hook(lambda *_: encodes.append(1))
    try:
        hit = cached_call(engine, requests)
    finally:
        hook.remove()
    after = engine.conditioning.stats
    assert torch.equal(miss, plain) and torch.equal(hit, plain)
    assert not encodes
    distinct = len({r.prompt for r in requests}) + engine.conditioning.negative
    assert after["prompt"].misses - before["prompt"].misses == distinct
    assert after["prompt"].hits - before["prompt"].hits == distinct
    refs = len(requests[0].images)
    assert after["latent"].misses - before["latent"].misses == refs
    assert after["latent"].hits - before["latent"].hits == refs


def test_text_to_image_with_n(engine: Flux2Engine) -> None:
    exact_three_ways(engine, [ImageRequest(prompt="a red car", width=64, height=64, n=2, seed=5)])


def test_edit_with_two_references(engine: Flux2Engine) -> None:
    request = ImageRequest(prompt="make it blue", width=64, height=80, images=references(2), n=2, seed=7)
    exact_three_ways(engine, [request])


def test_batched_requests_with_different_prompts(engine: Flux2Engine) -> None:
    """A batch's prompts are encoded one by one: each row equals the batched encode of before."""
    requests = [
        ImageRequest(prompt="a red car", width=64, height=64, n=2, seed=1),
        ImageRequest(prompt="a blue dog", width=64, height=64, n=1, seed=9),
        ImageRequest(prompt="a red car", width=64, height=64, n=1, seed=3),
    ]
    exact_three_ways(engine, requests)


def test_masked_edit(engine: Flux2Engine) -> None:
    """The latent stage of a masked edit (no composite) through the caches equals the plain call with the same
    noise and blender; the source's latents are kept beside the reference's."""
    image = references(1, seed=3)[0]
    mask = np.zeros((64, 64), dtype=bool)
    mask[16:48, 16:48] = True
    request = ImageRequest(prompt="a cat", width=64, height=64, images=(image,), mask=mask, n=2, seed=11)
    guidance = engine.default_guidance_scale if engine.takes_guidance else None
    engine.conditioning.clear()
    before = engine.conditioning.stats["latent"]
    runs = [run_masked_edit(engine.pipeline, request, STEPS, guidance, engine.conditioning, composite=False)]
    miss = engine.conditioning.stats["latent"]
    runs.append(run_masked_edit(engine.pipeline, request, STEPS, guidance, engine.conditioning, composite=False))
    assert miss.misses - before.misses == 2 and miss.entries == 2  # the reference and the source
    assert engine.conditioning.stats["latent"].hits - before.hits == 2

    from deployments.engine.masking import encode_source, prepare_latent_blend

    with torch.inference_mode():
        source = encode_source(engine.pipeline, resize_source(image, 64, 64))
        noise, blender = prepare_latent_blend(
            engine.pipeline, source, mask.astype(np.float32), seed_generators([request])
        )
    plain = plain_call(engine, [request], latents=noise, callback=blender)
    assert torch.equal(runs[0], plain) and torch.equal(runs[1], plain)


def test_engine_requests_equal_with_the_caches_off(engine: Flux2Engine) -> None:
    """Through ``generate``: the same image bytes with both caches on (miss, then hit) and off."""
    request = ImageRequest(prompt="a dog", width=64, height=64, images=references(1, seed=4), n=2, seed=2)
    engine.conditioning.clear()
    on = [engine.generate(request).images for _ in range(2)]
    engine.conditioning.resize(0, 0)
    try:
        off = engine.generate(request).images
    finally:
        engine.conditioning.resize(256, 64)
    for images in (*on, off):
        assert all(np.array_equal(a, b) for a, b in zip(images, on[0], strict=True))


def recording(method: Callable, seen: list, what: Callable[[Any], Any]) -> Callable:
    """``method``, noting ``what`` of its first argument in ``seen`` at each call."""

    def recorded(first: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(what(first))
        return method(first, *args, **kwargs)

    return recorded


def test_a_kept_reference_skips_its_preprocessing_and_vae_encode() -> None:
    engine = Flux2Engine.from_config(ModelConfig(source="tiny-klein"))
    pipeline = engine.pipeline
    encoded: list[tuple[int, ...]] = []
    preprocessed: list[tuple[int, int]] = []
    pipeline.vae.encode = recording(pipeline.vae.encode, encoded, lambda x: tuple(x.shape))
    pipeline.image_processor.preprocess = recording(pipeline.image_processor.preprocess, preprocessed, lambda i: i.size)
    request = ImageRequest(prompt="a cat", width=64, height=64, images=references(2), seed=1)
    cached_call(engine, [request])
    assert encoded == [(1, 3, 64, 64), (1, 3, 96, 80)] and preprocessed == [(64, 64), (80, 96)]
    encoded.clear()
    preprocessed.clear()
    cached_call(engine, [request])
    assert encoded == [] and preprocessed == [(64, 64), (64, 64)]  # 64x64 stand-ins, never encoded
    assert "_encode_vae_image" not in vars(pipeline)  # the hook lasts one call


def test_the_hook_is_removed_when_the_call_fails() -> None:
    engine = Flux2Engine.from_config(ModelConfig(source="tiny-klein"))
    request = ImageRequest(prompt="a cat", width=64, height=64, images=references(1), seed=1)
    keys = engine.conditioning.reference_keys(request.images)
    with pytest.raises(ValueError, match="boom"), engine.conditioning.references(request.images, keys):
        assert "_encode_vae_image" in vars(engine.pipeline)
        raise ValueError("boom")
    assert "_encode_vae_image" not in vars(engine.pipeline)


def test_the_kv_pipeline_encodes_references_through_the_hook() -> None:
    """The reference-KV pipeline encodes its references in the same method: a kept reference is never encoded."""
    engine = engine_of(build_tiny_klein_kv())
    request = ImageRequest(prompt="a cat", width=64, height=64, images=references(1), seed=1)
    first = cached_call(engine, [request])
    assert torch.equal(cached_call(engine, [request]), first)
    assert engine.conditioning.stats["latent"].hits == 1


def test_bytes_are_counted_bounded_and_reconfigured() -> None:
    engine = Flux2Engine.from_config(ModelConfig(source="tiny-dev", prompt_cache_mb=1))
    prompts = [f"a {color} car" for color in ("red", "green", "blue", "black", "white", "yellow")]
    for prompt in prompts[:2]:
        engine.generate(ImageRequest(prompt=prompt, width=64, height=64))
    stats = engine.conditioning.stats["prompt"]
    one = 512 * 48 * 4  # tokens x joint_attention_dim x float32
    assert stats.entries == 2 and stats.bytes == 2 * one
    engine.reconfigure(engine.config.model_copy(update={"prompt_cache_mb": 0, "latent_cache_mb": 0}))
    assert engine.conditioning.stats["prompt"].bytes == 0
    engine.generate(ImageRequest(prompt=prompts[0], width=64, height=64, images=references(1)))
    off = engine.conditioning.stats
    assert (off["prompt"].hits, off["prompt"].entries, off["latent"].misses) == (0, 0, 0)  # off: nothing counted


def test_byte_lru_evicts_the_least_recently_used() -> None:
    lru: ByteLRU[str] = ByteLRU(3 * MB)
    for key in "abc":
        lru.put(key, key.upper(), MB)
    assert lru.get("a") == "A"  # now the most recent: b goes first
    lru.put("d", "D", MB)
    assert lru.get("b") is None and lru.get("c") == "C"
    lru.put("huge", "H", 4 * MB)  # larger than the whole bound: not kept, nothing evicted for it
    assert lru.get("huge") is None and lru.stats.entries == 3
    lru.resize(MB)
    assert [key for key in "acd" if lru.get(key) is not None] == ["c"]
    stats = lru.stats
    assert (stats.hits, stats.misses, stats.evictions, stats.bytes, stats.entries) == (3, 4, 3, MB, 1)


def test_an_out_of_memory_retry_first_drops_the_caches() -> None:
    engine = Flux2Engine.from_config(ModelConfig(source="tiny-klein"))
    engine.generate(ImageRequest(prompt="a cat", width=64, height=64, images=references(1)))
    held: list[tuple[int, int]] = []

    def flaky() -> str:
        stats = engine.conditioning.stats
        held.append((stats["prompt"].entries, stats["latent"].entries))
        if len(held) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return "ok"

    assert engine.memory.run(flaky) == "ok"
    assert held == [(1, 1), (0, 0)]
