"""The ingress's reference cache: a file decoded once by the guarded decoder, the PNG results it encoded kept for an
edit that sends them back, read-only arrays, today's limits on every hit (no Ray, no torch)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from deployments.config import Limits
from deployments.errors import InvalidRequest, TooLarge
from deployments.openai.images import decode_image
from deployments.openai.protocol import ImageParams
from deployments.openai.references import ReferenceCache
from deployments.openai.serving import images_response
from deployments.types import ImageResult

LIMITS = Limits()


def photo(width: int = 96, height: int = 64, seed: int = 0, fmt: str = "JPEG") -> tuple[np.ndarray, bytes]:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return pixels, buffer.getvalue()


def test_the_same_file_is_decoded_once_and_its_pixels_cannot_be_changed() -> None:
    cache = ReferenceCache(8)
    _, data = photo()
    first = cache.decode(data, LIMITS, "image")
    again = cache.decode(data, LIMITS, "image[1]")
    assert again is first and np.array_equal(first, decode_image(data, LIMITS))
    with pytest.raises(ValueError, match="read-only"):
        first[0, 0, 0] = 1
    other = cache.decode(photo(seed=1)[1], LIMITS, "image")
    assert not np.array_equal(other, first)
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.entries, stats.bytes) == (1, 2, 2, 2 * first.nbytes)


def test_a_file_the_decoder_refuses_is_refused_every_time_and_never_kept() -> None:
    cache = ReferenceCache(8)
    junk = photo()[1][:200]  # a truncated JPEG
    for _ in range(2):
        with pytest.raises(InvalidRequest) as err:
            cache.decode(junk, LIMITS, "image")
        assert err.value.code == "invalid_image"
    assert cache.stats.entries == 0


@pytest.mark.parametrize(
    "limits",
    [Limits(min_side=80), Limits(max_input_pixels=5000), Limits(max_aspect_ratio=1.2)],
    ids=["min_side", "max_input_pixels", "max_aspect_ratio"],
)
def test_a_kept_image_meets_the_limits_in_force_now(limits: Limits) -> None:
    """The limits are live: an image kept under the old ones gets the error the decoder gives under the new."""
    cache = ReferenceCache(8)
    _, data = photo()
    cache.decode(data, LIMITS, "image[2]")
    with pytest.raises((InvalidRequest, TooLarge)) as kept:
        cache.decode(data, limits, "image[2]")
    with pytest.raises((InvalidRequest, TooLarge)) as fresh:
        decode_image(data, limits, "image[2]")
    assert (type(kept.value), kept.value.message, kept.value.param, kept.value.code) == (
        type(fresh.value),
        fresh.value.message,
        fresh.value.param,
        fresh.value.code,
    )
    assert cache.stats.hits == 1


def test_a_png_result_sent_back_is_not_decoded_and_equals_its_decode() -> None:
    """images_response registers each PNG it encodes; the file sent back hits, with exactly the decoded pixels."""
    cache = ReferenceCache(8)
    pixels = np.random.default_rng(2).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    result = ImageResult(images=[pixels], seed=1, num_inference_steps=4, guidance_scale=1.0, weights="x")
    body = json.loads(images_response(result, ImageParams(prompt="p", output_format="png"), cache))
    png = base64.b64decode(body["data"][0]["b64_json"])
    kept = cache.decode(png, LIMITS, "image")
    assert cache.stats.hits == 1 and cache.stats.misses == 0
    assert np.array_equal(kept, decode_image(png, LIMITS)) and kept is not pixels and not kept.flags.writeable
    pixels[0, 0] = 255 - pixels[0, 0]  # the engine's array, changed later, is not what was kept
    assert np.array_equal(kept, decode_image(png, LIMITS))


def test_jpeg_results_are_not_kept_and_a_cache_of_zero_keeps_nothing() -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    result = ImageResult(images=[pixels], seed=1, num_inference_steps=4, guidance_scale=1.0, weights="x")
    cache = ReferenceCache(8)
    images_response(result, ImageParams(prompt="p", output_format="jpeg"), cache)
    assert cache.stats.entries == 0
    off = ReferenceCache(0)
    images_response(result, ImageParams(prompt="p", output_format="png"), off)
    _, data = photo()
    assert off.decode(data, LIMITS, "image") is not off.decode(data, LIMITS, "image")
    assert (off.stats.hits, off.stats.misses, off.stats.entries) == (0, 0, 0)


def test_resize_evicts_the_least_recently_used() -> None:
    cache = ReferenceCache(3)
    files = [photo(512, 512, seed)[1] for seed in range(3)]  # 0.75 MiB of pixels each
    for data in files:
        cache.decode(data, LIMITS, "image")
    cache.decode(files[0], LIMITS, "image")
    cache.resize(2)
    assert cache.stats.entries == 2  # files[1], the least recently used, went
    cache.decode(files[1], LIMITS, "image")
    assert (cache.stats.hits, cache.stats.misses) == (1, 4)
