"""Safe image decoding, size arithmetic and output encoding for the ingress (no torch)."""

from __future__ import annotations

import base64
import io
import itertools
import math
import os
import re
import struct
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deployments.config import SIZE_MULTIPLE, Limits, on_grid
from deployments.errors import InvalidRequest, TooLarge

OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
REASON_CHARS = 200  # a decoder's complaint quoted in a 400, bounded: it may echo the client's bytes


@dataclass(frozen=True)
class Accepts:
    """The container formats one upload field takes, and how a file of another format is refused."""

    formats: frozenset[str]
    wanted: str
    code: str


# MPO: the JPEG that many phone cameras write.
IMAGE_FORMATS = Accepts(frozenset({"PNG", "JPEG", "MPO", "WEBP"}), "send PNG, JPEG or WebP", "invalid_image_format")
MASK_FORMATS = Accepts(frozenset({"PNG"}), "a mask must be a PNG with an alpha channel", "invalid_mask")


def _decode(
    data: bytes, limits: Limits, param: str, accepts: Accepts, to_array: Callable[[Image.Image], np.ndarray]
) -> np.ndarray:
    """The one guarded step every uploaded byte passes: open, format and pixel checks, load, EXIF
    orientation and ``to_array`` (mode conversion). Pillow's parsers raise almost any exception type on
    hostile bytes (in metadata too: EXIF, ICC, text chunks), so any failure here is a 400 on ``param``."""
    if not data:
        raise InvalidRequest(f"{param} is an empty file", param=param, code="invalid_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a client's malformed metadata is no server-side warning
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_format(image, param, accepts)
            check_input_pixels(image.width, image.height, limits, param)
            image.load()
            return to_array(ImageOps.exif_transpose(image))
    except (InvalidRequest, TooLarge):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # dimensions far past any limit
        raise TooLarge(
            f"{param} is too large to decode safely: over the limit of {limits.max_input_pixels} pixels",
            param=param,
            code="image_too_large",
        ) from None
    except UnidentifiedImageError:
        raise InvalidRequest(f"{param} is not an image in a known format", param=param, code="invalid_image") from None
    except Exception as exc:  # whatever a parser raises on client bytes is the client's 400
        reason = f"{type(exc).__name__}: {exc}"[:REASON_CHARS]
        raise InvalidRequest(
            f"{param} could not be decoded as an image ({reason})", param=param, code="invalid_image"
        ) from exc


def _check_format(image: Image.Image, param: str, accepts: Accepts) -> None:
    if image.format not in accepts.formats:
        raise InvalidRequest(
            f"{param} has unsupported format {image.format}; {accepts.wanted}", param=param, code=accepts.code
        )


def check_input_pixels(width: int, height: int, limits: Limits, param: str) -> None:
    """The bomb guard: the header's dimensions against the limit, before any pixel is decoded."""
    if width * height > limits.max_input_pixels:
        raise TooLarge(
            f"{param} is {width}x{height}, over the limit of {limits.max_input_pixels} pixels",
            param=param,
            code="image_too_large",
        )


def decode_image(data: bytes, limits: Limits, param: str = "image") -> np.ndarray:
    """Decode an upload to an RGB uint8 array: EXIF orientation applied, transparency composited on white."""
    return _decode(data, limits, param, IMAGE_FORMATS, lambda image: _rgb_array(image, limits, param))


def check_decoded(pixels: np.ndarray, limits: Limits, param: str) -> None:
    """What :func:`decode_image` holds an image's size to, for pixels it decoded earlier: the limits may have
    changed since (the order and errors are decode_image's)."""
    height, width = pixels.shape[:2]
    check_input_pixels(width, height, limits, param)
    check_reference_size(width, height, limits, param)


def _rgb_array(image: Image.Image, limits: Limits, param: str) -> np.ndarray:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = image.convert("RGB")
    check_reference_size(rgb.width, rgb.height, limits, param)
    return np.asarray(rgb, dtype=np.uint8).copy()


def decode_mask(data: bytes, limits: Limits, size: tuple[int, int]) -> np.ndarray:
    """OpenAI mask semantics: a PNG whose fully transparent pixels (alpha 0) are editable.

    Returns an (H, W) bool array, True where the image may change. The mask must have the size
    (width, height) of the first image; :func:`mask_at` brings it to the output's.
    """
    return _decode(data, limits, "mask", MASK_FORMATS, lambda image: _editable_array(image, size))


def mask_at(editable: np.ndarray, width: int, height: int) -> np.ndarray:
    """An (H, W) mask (nonzero = editable) as ``ImageRequest.mask``: bool at the output size.

    A resize is bilinear over 0/255, then a pixel is editable when it is at least half covered (Pillow resizes a
    binary image by nearest neighbour only, which would step the edge).
    """
    levels = np.where(editable, 255, 0).astype(np.uint8)
    if levels.shape != (height, width):
        levels = np.asarray(Image.fromarray(levels).resize((width, height), Image.Resampling.BILINEAR))
    return levels >= 128


def _editable_array(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    if image.size != size:
        raise InvalidRequest(
            f"mask is {image.width}x{image.height} but the first image is {size[0]}x{size[1]}; they must match",
            param="mask",
            code="invalid_mask",
        )
    if "A" not in image.getbands() and not (image.mode == "P" and "transparency" in image.info):
        raise InvalidRequest(
            "mask must be a PNG with an alpha channel (alpha 0 marks the area to edit)",
            param="mask",
            code="invalid_mask",
        )
    editable = np.asarray(image.convert("RGBA"), dtype=np.uint8)[..., 3] == 0
    if not editable.any():
        raise InvalidRequest(
            "mask has no transparent pixels, so nothing may be edited", param="mask", code="invalid_mask"
        )
    return editable


def check_reference_size(width: int, height: int, limits: Limits, param: str) -> None:
    if min(width, height) < limits.min_side:
        raise InvalidRequest(
            f"{param} is {width}x{height}; each side must be at least {limits.min_side} px",
            param=param,
            code="image_too_small",
        )
    if max(width, height) / min(width, height) > limits.max_aspect_ratio:
        raise InvalidRequest(
            f"{param} is {width}x{height}; its aspect ratio must be at most {limits.max_aspect_ratio:g}:1",
            param=param,
            code="invalid_aspect_ratio",
        )


# int() would also take signs, spaces, underscores, a trailing newline and non-ASCII digits; nine digits
# at most keep any int() far from Python's digit limit (every real size fails the checks below).
_SIZE = re.compile(r"([1-9][0-9]{0,8})x([1-9][0-9]{0,8})")


def parse_size(size: str | None, limits: Limits) -> tuple[int, int] | None:
    """``WxH`` → (width, height), validated; ``auto`` or None → None (the caller decides)."""
    if size is None or size == "auto":
        return None
    spelled = _SIZE.fullmatch(size)
    if spelled is None:
        raise InvalidRequest(
            f"size must be 'auto' or 'WIDTHxHEIGHT' in ASCII digits with a lowercase x (e.g. '1024x768'), got {size!r}",
            param="size",
            code="invalid_size",
        )
    width, height = int(spelled[1]), int(spelled[2])
    if not on_grid(width, height):
        raise InvalidRequest(
            f"size {width}x{height}: width and height must be multiples of {SIZE_MULTIPLE}",
            param="size",
            code="invalid_size",
        )
    if min(width, height) < limits.min_side or max(width, height) > limits.max_side:
        raise InvalidRequest(
            f"size {width}x{height}: each side must be between {limits.min_side} and {limits.max_side} px",
            param="size",
            code="invalid_size",
        )
    if width * height > limits.max_output_pixels:
        raise InvalidRequest(
            f"size {width}x{height} is over the limit of {limits.max_output_pixels} pixels",
            param="size",
            code="invalid_size",
        )
    if max(width, height) / min(width, height) > limits.max_aspect_ratio:
        raise InvalidRequest(
            f"size {width}x{height}: aspect ratio must be at most {limits.max_aspect_ratio:g}:1",
            param="size",
            code="invalid_size",
        )
    return width, height


def auto_size(width: int, height: int, limits: Limits) -> tuple[int, int]:
    """The output size for ``size=auto`` on an edit: the first image's size, scaled into the limits
    and snapped down to multiples of 16."""
    scale = min(1.0, math.sqrt(limits.max_output_pixels / (width * height)), limits.max_side / max(width, height))
    snap = lambda side: max(limits.min_side, int(side * scale) // SIZE_MULTIPLE * SIZE_MULTIPLE)  # noqa: E731
    return snap(width), snap(height)


def output_quality(compression: int | None) -> int:
    """JPEG / WebP quality (1-100) for OpenAI's ``output_compression`` (0-100, higher = smaller file)."""
    return 95 if compression is None else max(1, 100 - compression)


def encode_image(pixels: np.ndarray, output_format: str, compression: int | None) -> bytes:
    """Encode an (H, W, 3) uint8 array. ``compression`` is OpenAI's 0-100 (higher = smaller file)."""
    if output_format == "png":
        return encode_png(pixels, 1 if compression is None else round(compression * 9 / 100))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=OUTPUT_FORMATS[output_format], quality=output_quality(compression))
    return buffer.getvalue()


# PNG output is on the latency path of every request. Pillow's encoder tries all five row filters on
# every row and deflates on one thread: ~60-105 ms for a 1024x1024 image on two cores, against a
# serving-overhead budget of 15 ms. This writer uses one filter (Up, cheap in numpy and as small as
# Pillow's choice on photo-like images) and deflates horizontal slabs in parallel, the way pigz does.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_UP_FILTER = 2
_ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window; the level bits are informative only
_PARALLEL_MIN_ROWS = 256  # below this, one slab on the calling thread is fastest
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_DEFLATE_THREADS = max(1, min(8, _CPUS))
_deflate_pool = ThreadPoolExecutor(max_workers=_DEFLATE_THREADS, thread_name_prefix="png-deflate")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def _deflate_slab(data: np.ndarray, level: int, last: bool) -> bytes:
    """Raw deflate of one slab. A sync flush ends the slab on a byte boundary without marking the
    final block, so the slabs concatenate into one valid deflate stream (zlib releases the GIL)."""
    # At level 1 (the default) zlib's run-length strategy is ~40% faster on Up-filtered photos for ~the
    # same size; screenshot-like images come out ~30% larger.
    strategy = zlib.Z_RLE if level == 1 else zlib.Z_DEFAULT_STRATEGY
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15, 8, strategy)
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def encode_png(pixels: np.ndarray, level: int = 1) -> bytes:
    """8-bit RGB PNG of an (H, W, 3) uint8 array at zlib ``level`` (0 = stored), decoding to exactly
    ``pixels``. Every row uses the Up filter (the first row against an all-zero prior row)."""
    height, width, _ = pixels.shape
    rows = np.ascontiguousarray(pixels).reshape(height, width * 3)
    filtered = np.empty((height, 1 + width * 3), dtype=np.uint8)
    filtered[:, 0] = _PNG_UP_FILTER
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 wraps mod 256, as PNG's rule does

    slabs = _DEFLATE_THREADS if height >= _PARALLEL_MIN_ROWS else 1
    if slabs == 1:
        deflated = [_deflate_slab(filtered, level, last=True)]
        checksum = zlib.adler32(filtered)
    else:
        bounds = [height * i // slabs for i in range(slabs + 1)]
        parts = [filtered[start:end] for start, end in itertools.pairwise(bounds)]  # contiguous runs of whole rows
        futures = [_deflate_pool.submit(_deflate_slab, part, level, i == slabs - 1) for i, part in enumerate(parts)]
        checksum = zlib.adler32(filtered)  # runs while the slabs deflate
        deflated = [future.result() for future in futures]
    idat = b"".join([_ZLIB_HEADER, *deflated, struct.pack(">I", checksum)])
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, deflate, filter 0, no interlace
    chunks = [_png_chunk(b"IHDR", header), _png_chunk(b"IDAT", idat), _png_chunk(b"IEND", b"")]
    return b"".join([_PNG_SIGNATURE, *chunks])


def to_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
