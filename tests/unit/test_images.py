"""Image decoding, size arithmetic and encoding in the ingress (no Ray, no torch)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from deployments.config import Limits
from deployments.errors import InvalidRequest, TooLarge
from deployments.openai import images
from deployments.openai.images import auto_size, decode_image, decode_mask, encode_image, parse_size

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
    with pytest.raises(TooLarge) as err:
        decode_image(encode(Image.new("RGB", (200, 200))), Limits(max_input_pixels=100 * 100))
    assert err.value.code == "image_too_large" and "10000 pixels" in err.value.message


def test_decompression_bomb_quotes_the_configured_limit() -> None:
    """An image past Pillow's own bomb threshold is refused with the service's limit, not Pillow's."""
    header = Image.new("1", (20000, 20000))  # 400 Mpx, far over Pillow's 179 Mpx refusal threshold
    with pytest.raises(TooLarge) as err:
        decode_image(encode(header), Limits(max_input_pixels=4096 * 4096))
    assert str(4096 * 4096) in err.value.message and "Pillow" not in err.value.message
    assert str(Image.MAX_IMAGE_PIXELS) not in err.value.message


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "BMP"])
def test_only_png_jpeg_and_webp_are_accepted(fmt: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        decode_image(encode(Image.new("RGB", (64, 64)), fmt), LIMITS)
    assert err.value.code == "invalid_image_format" and fmt in err.value.message


def with_png_chunk(data: bytes, kind: bytes, body: bytes) -> bytes:
    """``data`` (a PNG) with one more chunk, CRC and all, before its first IDAT."""
    at = data.index(b"IDAT") - 4
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return data[:at] + chunk + data[at:]


JUNK_EXIF = b"\xde\xad\xbe\xef" * 10


def transparent_png() -> bytes:
    return encode(Image.new("RGBA", (128, 128), (0, 0, 0, 0)))  # a good mask: every pixel editable


def junk_exif_file(fmt: str) -> bytes:
    """A good transparent image but for its EXIF block: 40 bytes of 0xdeadbeef, which is no TIFF header."""
    if fmt == "PNG":
        return with_png_chunk(transparent_png(), b"eXIf", JUNK_EXIF)
    return encode(Image.new("RGBA", (128, 128), (0, 0, 0, 0)), fmt, exif=JUNK_EXIF)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_junk_exif_is_a_400_on_the_image(fmt: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        decode_image(junk_exif_file(fmt), LIMITS, "image[1]")
    assert err.value.param == "image[1]" and err.value.code == "invalid_image"
    assert "could not be decoded" in err.value.message


@pytest.mark.parametrize("fmt,code", [("PNG", "invalid_image"), ("WEBP", "invalid_mask")])
def test_junk_exif_is_a_400_on_the_mask(fmt: str, code: str) -> None:
    assert decode_mask(transparent_png(), LIMITS, (128, 128)).all()  # the same mask without the junk is good
    with pytest.raises(InvalidRequest) as err:
        decode_mask(junk_exif_file(fmt), LIMITS, (128, 128))
    assert err.value.param == "mask" and err.value.code == code


@pytest.mark.parametrize("fmt", ["WEBP", "GIF"])
def test_masks_are_png_only(fmt: str) -> None:
    """A mask is a PNG, as in OpenAI's API; a transparent WebP or GIF is refused as a mask, by name."""
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    with pytest.raises(InvalidRequest) as err:
        decode_mask(encode(mask, fmt), LIMITS, (64, 64))
    assert err.value.param == "mask" and err.value.code == "invalid_mask"
    assert fmt in err.value.message and "PNG" in err.value.message


def test_mask_alpha_zero_is_editable() -> None:
    mask = Image.new("RGBA", (64, 32), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 16, 32))
    editable = decode_mask(encode(mask), LIMITS, (64, 32))
    assert editable.shape == (32, 64)
    assert editable.dtype == np.bool_ and editable[:, :16].all() and not editable[:, 16:].any()


@pytest.mark.parametrize("size,expected", [("auto", None), (None, None), ("1024x768", (1024, 768))])
def test_parse_size(size: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_size(size, LIMITS) == expected


ODD_SPELLINGS_OF_64X64 = ["6_4x64", "+64x64", " 64x64", "\t64x64", "64x64\n", "64X64", "064x64"]
NON_ASCII_DIGITS = ["\uff16\uff14x64", "\u0666\u0664x64"]  # full-width and Arabic-Indic 64


@pytest.mark.parametrize("size", ODD_SPELLINGS_OF_64X64 + NON_ASCII_DIGITS)
def test_parse_size_takes_only_ascii_digits_and_a_lowercase_x(size: str) -> None:
    """int() would read each of these as 64: the size is spelled one way only, as OpenAI documents it."""
    with pytest.raises(InvalidRequest) as err:
        parse_size(size, LIMITS)
    assert err.value.param == "size" and err.value.code == "invalid_size"


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


def noise_image(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(height * 1000 + width).integers(0, 256, (height, width, 3), dtype=np.uint8)


def smooth_image(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], -1).astype(np.uint8)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split a PNG into (type, data) chunks, checking the signature and every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind, body = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        offset += 12 + length
    return chunks


@pytest.mark.parametrize("compression", [None, 0, 100])
@pytest.mark.parametrize("make", [noise_image, smooth_image])
@pytest.mark.parametrize("height,width", [(1, 1), (1, 40), (17, 33), (33, 17), (64, 64), (256, 7), (301, 23)])
def test_png_roundtrip_is_exact(height: int, width: int, make, compression: int | None) -> None:
    pixels = make(height, width)
    data = encode_image(pixels, "png", compression)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == "PNG" and decoded.mode == "RGB" and decoded.size == (width, height)
    assert np.array_equal(np.asarray(decoded), pixels)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize("height", [256, 259, 300])
def test_png_slabs_make_one_valid_zlib_stream(monkeypatch: pytest.MonkeyPatch, threads: int, height: int) -> None:
    """Whatever the slab count (even or not), the IDAT is one zlib stream with a correct adler32 (which
    Pillow does not check) and CRCs, and decodes to the Up-filtered rows."""
    monkeypatch.setattr(images, "_DEFLATE_THREADS", threads)
    pixels = noise_image(height, 19)
    for compression in (None, 0, 100):
        data = encode_image(pixels, "png", compression)
        chunks = png_chunks(data)
        assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
        assert chunks[0][1] == struct.pack(">IIBBBBB", 19, height, 8, 2, 0, 0, 0)
        raw = np.frombuffer(zlib.decompress(chunks[1][1]), dtype=np.uint8).reshape(height, 1 + 19 * 3)
        assert (raw[:, 0] == 2).all()
        assert np.array_equal(np.cumsum(raw[:, 1:], axis=0, dtype=np.uint8), pixels.reshape(height, -1))
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)


def test_png_accepts_non_contiguous_pixels() -> None:
    pixels = noise_image(40, 30)[::-1, ::2]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_image(pixels, "png", None)))), pixels)


def test_png_default_level_compresses_smooth_images() -> None:
    pixels = smooth_image(512, 512)
    assert len(encode_image(pixels, "png", None)) < 0.6 * pixels.nbytes
    assert len(encode_image(pixels, "png", 0)) > pixels.nbytes  # level 0 stores
