"""Format-aware fuzzing of the one guarded decoder: real PNG, JPEG and WebP files, mutated chunk by chunk and
marker by marker, through decode_image and decode_mask. The only allowed outcomes are a well-formed array or
InvalidRequest / TooLarge on the right param: anything else would be a 500 over HTTP.

``fuzz_case(index)`` rebuilds any case from its index alone (tests/serve/test_fuzz.py sends a sample over HTTP).
"""

from __future__ import annotations

import io
import random
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from functools import cache
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageCms, PngImagePlugin

from deployments.config import Limits
from deployments.errors import InvalidRequest, TooLarge
from deployments.openai.images import decode_image, decode_mask

SEED = 23
BUDGET_S = 20.0  # wall clock on a slow shared 2-core machine; thousands of cases fit
MIN_CASES = 1500
SLOWEST_CASE_S = 5.0  # a file that takes longer to refuse is a denial of service, even if it ends in a 400
LIMITS = Limits(max_input_pixels=512 * 512)  # the serve suites' limit: a forged header meets the bomb guard
IMAGE_PARAM = "image[1]"
IMAGE_CODES = {"invalid_image", "invalid_image_format", "image_too_large", "image_too_small", "invalid_aspect_ratio"}
MASK_CODES = {"invalid_image", "invalid_mask", "image_too_large"}


class Case(NamedTuple):
    """One fuzzed upload: its name (index, base file, mutations), bytes, and the base's (width, height)."""

    name: str
    data: bytes
    size: tuple[int, int]


# Base files: photo-like pixels with the metadata each format carries.


def photo(width: int, height: int, alpha: bool = False) -> np.ndarray:
    """Smooth gradients, a few soft blobs and sensor-like noise: what encoders see in real uploads."""
    rng = np.random.default_rng(width * 7 + height)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [np.sin(3 * x + phase) * 0.5 + 0.5 for phase in (0.0, 1.3, 2.6)]
    for _ in range(4):
        cx, cy, radius = rng.random(3) * [1, 1, 0.3]
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (radius**2 + 1e-3))
        channels = [c * (1 - blob) + blob * rng.random() for c in channels]
    pixels = np.stack(channels, -1) * 255 + rng.normal(0, 6, (height, width, 3))
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    if not alpha:
        return pixels
    opacity = np.full((height, width, 1), 255, np.uint8)
    opacity[: height // 2, : width // 3] = 0  # an editable corner, so a mask decodes
    return np.concatenate([pixels, opacity], -1)


def exif_bytes() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate on display
    exif[0x010F] = "fuzz camera"
    exif[0x0132] = "2024:01:01 00:00:00"
    exif.get_ifd(0x8769)[0x9003] = "2024:01:01 00:00:00"  # Exif IFD: DateTimeOriginal
    exif.get_ifd(0x8825)[0x0001] = "N"  # GPS IFD
    return exif.tobytes()


XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="3"/></rdf:RDF></x:xmpmeta>'
)


def icc_bytes() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_text() -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "a plain tEXt chunk")
    info.add_text("Description", "a compressed zTXt chunk " * 8, zip=True)
    info.add_itxt("XML:com.adobe.xmp", XMP.decode(), lang="en", tkey="xmp", zip=True)
    return info


@cache
def base_files() -> tuple[tuple[str, bytes, tuple[int, int]], ...]:
    """(name, file, (width, height)) of every base file; some 64x64, so they fit the HTTP suite's first image."""
    rgb = Image.fromarray(photo(64, 64))
    rgba = Image.fromarray(photo(64, 64, alpha=True))
    odd = Image.fromarray(photo(72, 64))  # partial 16x16 MCUs and VP8 macroblocks
    tall = Image.fromarray(photo(64, 80, alpha=True))
    meta = {"exif": exif_bytes(), "icc_profile": icc_bytes()}
    palette = rgba.convert("RGB").quantize(32)
    palette.info["transparency"] = 0
    gray16 = Image.fromarray(photo(64, 64)[..., 0].astype(np.uint16) * 257)  # 16-bit grayscale
    files = [
        ("png-rgb-meta", save(rgb, "PNG", pnginfo=png_text(), dpi=(300, 300), **meta)),
        ("png-rgba", save(rgba, "PNG", exif=exif_bytes())),
        ("png-rgba-tall", save(tall, "PNG", pnginfo=png_text())),
        ("png-palette-trns", save(palette, "PNG", optimize=True)),
        ("png-la", save(rgba.convert("LA"), "PNG")),
        ("png-gray16", save(gray16, "PNG")),
        ("png-apng", save(rgba, "PNG", save_all=True, append_images=[rgba.rotate(90)], duration=40)),
        ("jpeg-420-meta", save(rgb, "JPEG", quality=85, comment=b"fuzz", **meta)),
        ("jpeg-odd-progressive", save(odd, "JPEG", quality=70, progressive=True, optimize=True, subsampling=2)),
        ("jpeg-444-restarts", save(rgb, "JPEG", quality=95, subsampling=0, restart_marker_blocks=4)),
        ("jpeg-gray", save(rgb.convert("L"), "JPEG", quality=80)),
        ("jpeg-cmyk", save(rgb.convert("CMYK"), "JPEG", quality=80)),
        ("webp-lossy-meta", save(rgb, "WEBP", quality=80, xmp=XMP, **meta)),
        ("webp-odd-lossy", save(odd, "WEBP", quality=60)),
        ("webp-lossy-alpha", save(rgba, "WEBP", quality=80, exif=exif_bytes())),
        ("webp-lossless-alpha", save(rgba, "WEBP", lossless=True, icc_profile=icc_bytes())),
        ("webp-animated", save(rgba, "WEBP", save_all=True, append_images=[rgba.rotate(90)], duration=40)),
    ]
    sizes = {"png-rgba-tall": (64, 80), "jpeg-odd-progressive": (72, 64), "webp-odd-lossy": (72, 64)}
    return tuple((name, data, sizes.get(name, (64, 64))) for name, data in files)


# Payloads for junk metadata: raw junk, the 0xdeadbeef, broken TIFF headers, zlib bombs.

ZLIB_BOMB = zlib.compress(b"\0" * 4_000_000, 9)  # 4 MB of text from 4 KB, over Pillow's MAX_TEXT_CHUNK


def junk(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.choice([0, 1, 4, 8, 40, 300, 4000]))
    if kind == 1:
        return b"\xde\xad\xbe\xef" * rng.randint(1, 40)
    if kind == 2:  # a TIFF header that passes the first check, then an IFD pointing anywhere
        return rng.choice([b"MM\0*", b"II*\0"]) + struct.pack(">I", rng.choice([0, 8, 2**31])) + rng.randbytes(40)
    if kind == 3:
        return b"Exif\0\0" + rng.choice([b"MM\0*", b"II*\0"]) + rng.randbytes(rng.randint(0, 60))
    if kind == 4:
        return ZLIB_BOMB
    return zlib.compress(rng.randbytes(rng.randint(0, 200)))[: rng.randint(1, 210)]


def flip(rng: random.Random, data: bytes, count: int | None = None) -> bytes:
    """``data`` with a few bytes set to random or boundary values."""
    if not data:
        return data
    out = bytearray(data)
    for _ in range(count or rng.randint(1, 8)):
        out[rng.randrange(len(out))] = rng.choice([0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)])
    return bytes(out)


def boundary(rng: random.Random, bits: int) -> int:
    return rng.choice([0, 1, 63, 64, 65, 2**bits - 1, 2 ** (bits - 1), rng.randrange(2**bits)])


# PNG: chunks (length, type, data, CRC) as separate pieces after the signature.

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_JUNK_KINDS = [b"eXIf", b"iCCP", b"zTXt", b"tEXt", b"iTXt", b"sBIT", b"pHYs", b"tRNS", b"PLTE", b"gAMA", b"cHRM"]
PNG_JUNK_KINDS += [b"sRGB", b"bKGD", b"tIME", b"acTL", b"fcTL", b"fdAT", b"IHDR", b"IDAT", b"IEND", b"abCD", b"zzzz"]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_pieces(data: bytes) -> list[bytes]:
    pieces, offset = [], len(PNG_SIGNATURE)
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        pieces.append(data[offset : offset + 12 + length])
        offset += 12 + length
    return pieces


def png_junk_body(rng: random.Random, kind: bytes) -> bytes:
    """A payload shaped like ``kind``'s where that reaches deeper parsers (text, ICC, APNG control)."""
    if kind in (b"zTXt", b"iCCP"):
        return b"Description\0" + bytes([rng.choice([0, 0, 1])]) + junk(rng)
    if kind == b"iTXt":
        return b"XML:com.adobe.xmp\0" + bytes([rng.choice([0, 1]), rng.choice([0, 8])]) + b"en\0xmp\0" + junk(rng)
    if kind == b"fcTL":
        return struct.pack(">IIIIIHHBB", *(boundary(rng, 32) for _ in range(5)), 1, 1, 0, 0)
    if kind == b"acTL":
        return struct.pack(">II", boundary(rng, 32), boundary(rng, 32))
    return junk(rng)


def drop_or_duplicate(rng: random.Random, parts: list[bytes], index: int, name: str, *, drop: bool) -> str:
    """Remove part ``index`` of a file's chunks or segments, or insert a copy of it at a random place."""
    if drop:
        del parts[index]
        return f"drop {name}"
    parts.insert(rng.randrange(len(parts) + 1), parts[index])
    return f"duplicate {name}"


def png_mutate(rng: random.Random, pieces: list[bytes]) -> str:
    """One chunk-aware mutation of ``pieces``, in place; returns what it did."""
    index = rng.randrange(len(pieces))
    piece = pieces[index]
    kind, body = piece[4:8], piece[8:-4]
    name = kind.decode("latin-1")
    action = rng.randrange(10)
    if action < 2:
        return drop_or_duplicate(rng, pieces, index, name, drop=action == 0)
    if action == 2:
        other = rng.randrange(len(pieces))
        pieces[index], pieces[other] = pieces[other], piece
        return f"swap {name} with #{other}"
    if action == 3:
        length = rng.choice([0, len(body) - 1, len(body) + 1, len(body) + 100, 2**31 - 1, 2**32 - 1])
        pieces[index] = struct.pack(">I", max(0, length)) + piece[4:]
        return f"length of {name} -> {length}"
    if action == 4:
        pieces[index] = piece[:-4] + rng.randbytes(4)
        return f"break CRC of {name}"
    if action == 5:
        pieces[index] = png_chunk(kind, flip(rng, body))
        return f"corrupt {name}, CRC fixed"
    if action == 6:
        pieces[index] = png_chunk(kind, body[: rng.randrange(len(body) + 1)])
        return f"truncate {name}, CRC fixed"
    if action == 7:
        return png_mutate_header(rng, pieces)
    if action == 8:
        return png_mutate_pixels(rng, pieces)
    junk_kind = rng.choice(PNG_JUNK_KINDS)
    junk_piece = png_chunk(junk_kind, png_junk_body(rng, junk_kind))
    if rng.random() < 0.3:
        junk_piece = junk_piece[:-4] + rng.randbytes(4)
    pieces.insert(rng.randint(1, len(pieces)), junk_piece)
    return f"junk {junk_kind.decode()} at {index}"


def png_mutate_header(rng: random.Random, pieces: list[bytes]) -> str:
    """IHDR fields set to boundary values with the CRC fixed, so the decoder believes them."""
    header = next((i for i, piece in enumerate(pieces) if piece[4:8] == b"IHDR"), None)
    if header is None or len(pieces[header]) != 25:
        return "no IHDR"
    fields = list(struct.unpack(">IIBBBBB", pieces[header][8:21]))
    field = rng.randrange(7)
    fields[field] = boundary(rng, 32) if field < 2 else rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 255])
    pieces[header] = png_chunk(b"IHDR", struct.pack(">IIBBBBB", *fields))
    return f"IHDR field {field} -> {fields[field]}"


def png_mutate_pixels(rng: random.Random, pieces: list[bytes]) -> str:
    """Corrupt the filtered scanlines inside a valid zlib stream: bad filter types, short rows."""
    idat = next((i for i, piece in enumerate(pieces) if piece[4:8] == b"IDAT"), None)
    if idat is None:
        return "no IDAT"
    try:
        rows = zlib.decompress(pieces[idat][8:-4])
    except zlib.error:
        return "IDAT not a whole zlib stream"
    rows = flip(rng, rows) if rng.random() < 0.6 else rows[: rng.randrange(len(rows) + 1)]
    pieces[idat] = png_chunk(b"IDAT", zlib.compress(rows))
    return "rows corrupted inside a valid zlib stream"


def png_case(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    pieces = png_pieces(data)
    done = [png_mutate(rng, pieces) for _ in range(rng.randint(1, 3))]
    return "; ".join(done), PNG_SIGNATURE + b"".join(pieces)


# JPEG: marker segments; a scan segment carries its entropy-coded data.

JPEG_APP_JUNK = [
    b"\xff\xe1",  # APP1: Exif or XMP
    b"\xff\xe2",  # APP2: ICC_PROFILE or MPF (which makes Pillow read the file as MPO)
    b"\xff\xed",  # APP13: Photoshop
    b"\xff\xee",  # APP14: Adobe
    b"\xff\xfe",  # COM
]
JPEG_APP_PREFIXES = [b"Exif\0\0", b"http://ns.adobe.com/xap/1.0/\0", b"ICC_PROFILE\0\x01\x01", b"ICC_PROFILE\0\x02\x01"]
JPEG_APP_PREFIXES += [b"MPF\0", b"MPF\0MM\0*\0\0\0\x08", b"Photoshop 3.0\0", b"Adobe\0", b""]


def jpeg_segments(data: bytes) -> list[bytes]:
    segments, offset = [data[:2]], 2
    while offset < len(data):
        marker = data[offset + 1]
        if marker == 0xD9:  # EOI
            segments.append(data[offset : offset + 2])
            offset += 2
            continue
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        end = offset + 2 + length
        if marker == 0xDA:  # scan data runs to the next marker that is neither stuffing nor a restart
            while not (data[end] == 0xFF and data[end + 1] not in (0x00, *range(0xD0, 0xD8))):
                end += 1
        segments.append(data[offset:end])
        offset = end
    return segments


def jpeg_segment(marker: bytes, body: bytes) -> bytes:
    return marker + struct.pack(">H", min(len(body) + 2, 0xFFFF)) + body


def jpeg_mutate(rng: random.Random, segments: list[bytes]) -> str:
    """One marker-aware mutation of ``segments``, in place; returns what it did."""
    index = rng.randrange(len(segments))
    segment = segments[index]
    name = f"FF{segment[1]:02X}" if len(segment) > 1 else "?"
    has_length = len(segment) >= 4 and segment[1] not in (0xD8, 0xD9)
    action = rng.randrange(8)
    if action < 2:
        return drop_or_duplicate(rng, segments, index, name, drop=action == 0)
    if action == 2 and has_length:
        length = rng.choice([0, 1, 2, 3, boundary(rng, 16)])
        segments[index] = segment[:2] + struct.pack(">H", length) + segment[4:]
        return f"length of {name} -> {length}"
    if action == 3 and has_length:  # header fields: SOF dims and sampling, DQT/DHT ids and counts, SOS selectors
        segments[index] = segment[:4] + flip(rng, segment[4:16], rng.randint(1, 3)) + segment[16:]
        return f"corrupt {name} header"
    if action == 4 and segment[1:2] == b"\xda":
        segments[index] = segment[: rng.randrange(len(segment) + 1)]
        return "truncate scan data"
    if action == 5 and segment[1:2] == b"\xda":
        segments[index] = segment[:14] + flip(rng, segment[14:], rng.randint(1, 20))
        return "corrupt scan data"
    if action == 6:
        sof = next((i for i, s in enumerate(segments) if s[1:2] in (b"\xc0", b"\xc1", b"\xc2")), None)
        if sof is not None:
            dims = struct.pack(">HH", boundary(rng, 16), boundary(rng, 16))
            segments[sof] = segments[sof][:5] + dims + segments[sof][9:]
            return f"SOF dims -> {struct.unpack('>HH', dims)}"
    marker = rng.choice(JPEG_APP_JUNK)
    segments.insert(rng.randint(1, len(segments)), jpeg_segment(marker, rng.choice(JPEG_APP_PREFIXES) + junk(rng)))
    return f"junk FF{marker[1]:02X} at {index}"


def jpeg_case(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    segments = jpeg_segments(data)
    done = [jpeg_mutate(rng, segments) for _ in range(rng.randint(1, 3))]
    return "; ".join(done), b"".join(segments)


# WebP: RIFF chunks (fourcc, little-endian size, data, pad byte to even).

WEBP_JUNK_KINDS = [b"EXIF", b"ICCP", b"XMP ", b"ALPH", b"ANIM", b"ANMF", b"VP8X", b"VP8 ", b"VP8L", b"zzzz"]


def riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + b"\0" * (len(body) % 2)


def riff_pieces(data: bytes) -> list[bytes]:
    pieces, offset = [], 12
    while offset < len(data):
        (size,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        end = offset + 8 + size + size % 2
        pieces.append(data[offset:end])
        offset = end
    return pieces


def vp8x(flags: int, width: int, height: int) -> bytes:
    return riff_chunk(
        b"VP8X", bytes([flags, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    )


def webp_mutate(rng: random.Random, pieces: list[bytes]) -> str:
    """One chunk-aware mutation of ``pieces``, in place; returns what it did."""
    index = rng.randrange(len(pieces))
    piece = pieces[index]
    kind, body = piece[:4], piece[8:]
    name = kind.decode("latin-1").strip()
    action = rng.randrange(8)
    if action == 1 or (action == 0 and len(pieces) > 1):
        return drop_or_duplicate(rng, pieces, index, name, drop=action == 0)
    if action == 2:
        size = rng.choice([0, 1, len(body) - 1, len(body) + 1, len(body) + 1000, 2**31, 2**32 - 1])
        pieces[index] = kind + struct.pack("<I", max(0, size)) + body
        return f"size of {name} -> {size}"
    if action == 3:  # frame headers: VP8 start code and dims, VP8L signature and dims, VP8X flags and canvas
        pieces[index] = kind + piece[4:8] + flip(rng, body[:16], rng.randint(1, 3)) + body[16:]
        return f"corrupt {name} header"
    if action == 4:
        pieces[index] = kind + piece[4:8] + body[:16] + flip(rng, body[16:], rng.randint(1, 20))
        return f"corrupt {name} data"
    if action == 5:
        pieces[index] = riff_chunk(kind, body[: rng.randrange(len(body) + 1)])
        return f"truncate {name}, size fixed"
    if action == 6:
        flags, width, height = rng.randrange(256), boundary(rng, 24) or 1, boundary(rng, 24) or 1
        extended = [i for i, p in enumerate(pieces) if p[:4] == b"VP8X"]
        if extended:
            pieces[extended[0]] = vp8x(flags, width, height)
        else:
            pieces.insert(0, vp8x(flags, width, height))
        return f"VP8X flags {flags:#x}, canvas {width}x{height}"
    junk_kind = rng.choice(WEBP_JUNK_KINDS)
    pieces.insert(rng.randint(0, len(pieces)), riff_chunk(junk_kind, junk(rng)))
    if b"VP8X" not in (p[:4] for p in pieces) and rng.random() < 0.7:  # metadata counts only beside a VP8X
        pieces.insert(0, vp8x(0x3C, 64, 64))
    return f"junk {junk_kind.decode().strip()} at {index}"


def webp_case(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    pieces = riff_pieces(data)
    done = [webp_mutate(rng, pieces) for _ in range(rng.randint(1, 3))]
    body = b"WEBP" + b"".join(pieces)
    riff_size = len(body) if rng.random() < 0.85 else boundary(rng, 32)
    if riff_size != len(body):
        done.append(f"RIFF size -> {riff_size}")
    return "; ".join(done), b"RIFF" + struct.pack("<I", riff_size) + body


# Format-blind mutations: flips, inserts, deletes, repeats, truncation.


def bytes_case(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    out = bytearray(data)
    action = rng.randrange(5)
    at = rng.randrange(len(out) + 1)
    if action == 0:
        return "flip bytes", flip(rng, data, rng.randint(1, 32))
    if action == 1:
        out[at:at] = rng.randbytes(rng.randint(1, 64))
        return f"insert at {at}", bytes(out)
    if action == 2:
        del out[at : at + rng.randint(1, 256)]
        return f"delete at {at}", bytes(out)
    if action == 3:
        out[at:at] = out[at : at + rng.randint(1, 512)] * rng.randint(1, 4)
        return f"repeat at {at}", bytes(out)
    return f"truncate at {at}", bytes(out[:at])


FORMAT_CASES: dict[str, Callable[[random.Random, bytes], tuple[str, bytes]]] = {
    "png": png_case,
    "jpeg": jpeg_case,
    "webp": webp_case,
}


def fuzz_case(index: int, seed: int = SEED) -> Case:
    """Case ``index`` of ``seed``: a base file, one to three format-aware mutations, sometimes byte-level ones."""
    rng = random.Random(f"{seed}:{index}")
    name, data, size = rng.choice(base_files())
    done = []
    if rng.random() < 0.8:
        description, data = FORMAT_CASES[name.split("-")[0]](rng, data)
        done.append(description)
    if not done or rng.random() < 0.3:
        description, data = bytes_case(rng, data)
        done.append(description)
    return Case(f"case {index} of seed {seed}: {name} | {'; '.join(done)}", data, size)


def fuzz_cases(seed: int = SEED) -> Iterator[Case]:
    index = 0
    while True:
        yield fuzz_case(index, seed)
        index += 1


# The checks: what each decoder may answer.


def image_outcome(data: bytes) -> str:
    try:
        pixels = decode_image(data, LIMITS, IMAGE_PARAM)
    except (InvalidRequest, TooLarge) as err:
        assert err.param == IMAGE_PARAM and err.code in IMAGE_CODES and 0 < len(err.message) < 600, vars(err)
        return f"image: {type(err).__name__} {err.code}"
    height, width = pixels.shape[:2]
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3, (pixels.dtype, pixels.shape)
    assert min(width, height) >= LIMITS.min_side and width * height <= LIMITS.max_input_pixels, pixels.shape
    return "image: decoded"


def mask_outcome(data: bytes, size: tuple[int, int]) -> str:
    try:
        editable = decode_mask(data, LIMITS, size)
    except (InvalidRequest, TooLarge) as err:
        assert err.param == "mask" and err.code in MASK_CODES and 0 < len(err.message) < 600, vars(err)
        return f"mask: {type(err).__name__} {err.code}"
    assert editable.dtype == np.bool_ and editable.shape == (size[1], size[0]), (editable.dtype, editable.shape)
    assert editable.any()
    return "mask: decoded"


MASK_BASES = ("png-rgba", "png-rgba-tall", "png-la", "png-apng")  # the PNGs with an editable (alpha 0) corner


def outcomes_of(case: Case) -> tuple[list[str], list[str]]:
    """Both decoders' outcomes of ``case``, and a line for each crash (any other exception or a bad result)."""
    outcomes, crashes = [], []
    for check, args in ((image_outcome, (case.data,)), (mask_outcome, (case.data, case.size))):
        try:
            outcomes.append(check(*args))
        except Exception as exc:  # the finding: report it with what reproduces it
            crashes.append(f"{case.name}: {check.__name__}: {type(exc).__name__}: {exc}")
    return outcomes, crashes


def test_base_files_decode() -> None:
    """The unmutated files are good uploads, so the mutations start from what clients really send."""
    for name, data, size in base_files():
        assert image_outcome(data) == "image: decoded", name
        if name in MASK_BASES:
            assert mask_outcome(data, size) == "mask: decoded", name


def test_mutated_files_get_an_array_or_a_400() -> None:
    outcomes: Counter[str] = Counter()
    crashes: list[str] = []
    ran, slowest = 0, (0.0, "")
    started = time.monotonic()
    for case in fuzz_cases():
        if time.monotonic() - started > BUDGET_S:
            break
        case_started = time.monotonic()
        case_outcomes, case_crashes = outcomes_of(case)
        slowest = max(slowest, (time.monotonic() - case_started, case.name))
        outcomes.update(case_outcomes)
        crashes += case_crashes
        ran += 1
    elapsed = time.monotonic() - started
    print(f"\n{ran} cases in {elapsed:.1f} s, slowest {slowest[0] * 1000:.0f} ms ({slowest[1]})")
    for outcome, count in sorted(outcomes.items()):
        print(f"  {count:6d}  {outcome}")
    reproduce = "python3 -c 'from tests.unit.test_image_fuzz import *; print(outcomes_of(fuzz_case(INDEX, SEED)))'"
    assert not crashes, f"{len(crashes)} crashes; reproduce one with {reproduce}\n" + "\n".join(crashes[:30])
    assert ran >= MIN_CASES, f"only {ran} cases in {elapsed:.1f} s"
    assert slowest[0] < SLOWEST_CASE_S, slowest
    for kind in ("image: decoded", "mask: decoded", "image: TooLarge", "image: InvalidRequest", "mask: InvalidRequest"):
        assert any(outcome.startswith(kind) for outcome in outcomes), f"no case reached {kind!r}: {outcomes}"
