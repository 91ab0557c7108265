"""Image decoding, size arithmetic and encoding in the ingress (no Ray, no torch)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from deployments.config import Limits
from deployments.images import auto_size, decode_image, decode_mask, encode_image, parse_size
from deployments.protocol import ServiceError

LIMITS = Limits()


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (128, 64), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    pixels = decode_image(encode(image, "JPEG", exif=exif.tobytes()), LIMITS)
    assert pixels.shape == (128, 64, 3)


def test_transparency_is_composited_on_white() -> None:
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    pixels = decode_image(encode(image), LIMITS)
    assert pixels.shape == (64, 64, 3) and (pixels == 255).all()


def test_grayscale_becomes_rgb() -> None:
    pixels = decode_image(encode(Image.new("L", (64, 64), 77)), LIMITS)
    assert pixels.shape == (64, 64, 3) and (pixels == 77).all()


def test_input_pixel_limit() -> None:
    with pytest.raises(ServiceError) as err:
        decode_image(encode(Image.new("RGB", (200, 200))), Limits(max_input_pixels=100 * 100))
    assert err.value.status == 413


def test_mask_alpha_zero_is_editable() -> None:
    mask = Image.new("RGBA", (64, 32), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 16, 32))
    editable = decode_mask(encode(mask), LIMITS, (64, 32))
    assert editable.shape == (32, 64)
    assert (editable[:, :16] == 255).all() and (editable[:, 16:] == 0).all()


@pytest.mark.parametrize(
    "size,expected", [("auto", None), (None, None), ("1024x768", (1024, 768)), ("64X64", (64, 64))]
)
def test_parse_size(size: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_size(size, LIMITS) == expected


def test_auto_size_snaps_and_scales_into_limits() -> None:
    assert auto_size(100, 70, LIMITS) == (96, 64)
    width, height = auto_size(4000, 3000, LIMITS)
    assert width * height <= LIMITS.max_output_pixels and width % 16 == 0 and height % 16 == 0
    assert abs(width / height - 4 / 3) < 0.02


@pytest.mark.parametrize("fmt,pil", [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_encode_roundtrip(fmt: str, pil: str) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    data = encode_image(pixels, fmt, None)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == pil and decoded.size == (48, 32)
    if fmt == "png":
        assert np.array_equal(np.asarray(decoded), pixels)


def test_compression_makes_jpeg_smaller() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert len(encode_image(pixels, "jpeg", 90)) < len(encode_image(pixels, "jpeg", 0))
