"""Evaluation cases: test images drawn procedurally (nothing downloaded), edit prompts and masks.

Every image is drawn with numpy + PIL from fixed shapes, so the set is the same on every machine and
free of licences. Sizes scale with the requested output size. Masks follow the service's convention:
(H, W) uint8, 255 = editable, the size of the first image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont


@dataclass(frozen=True)
class Case:
    """One edit: images (the first is the one edited), an instruction, an optional editable region."""

    name: str
    kind: str  # object swap | stylisation | interior change | text rendering | multi-reference composition
    prompt: str
    images: tuple[np.ndarray, ...]
    mask: np.ndarray | None = None
    send_mask: bool = True  # False: a prompt-only edit, still measured on the mask's region


def without_masks(cases: list[Case]) -> list[Case]:
    """Each masked case again as a prompt-only edit (``NAME-nomask``): what the mask buys."""
    return [
        Case(f"{c.name}-nomask", c.kind, c.prompt, c.images, c.mask, send_mask=False)
        for c in cases
        if c.mask is not None
    ]


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=max(8, size))
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _vertical_gradient(width: int, height: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> np.ndarray:
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    colours = (1 - t) * np.array(top, np.float32) + t * np.array(bottom, np.float32)
    return np.broadcast_to(colours, (height, width, 3)).astype(np.uint8)


def _texture(image: np.ndarray, seed: int, amplitude: float = 6.0) -> np.ndarray:
    """Low-amplitude smooth noise so flat regions are not perfectly flat (SSIM and VAEs like texture)."""
    rng = np.random.default_rng(seed)
    height, width = image.shape[:2]
    coarse = rng.normal(0.0, amplitude, (max(2, height // 8), max(2, width // 8), 1)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(coarse[..., 0]).resize((width, height), Image.Resampling.BICUBIC))
    return np.clip(image.astype(np.float32) + smooth[..., None], 0, 255).astype(np.uint8)


def _mask_box(width: int, height: int, box: tuple[float, float, float, float]) -> np.ndarray:
    """An editable rectangle given in fractions of the image (x0, y0, x1, y1)."""
    mask = np.zeros((height, width), dtype=np.uint8)
    x0, y0, x1, y1 = (round(v * s) for v, s in zip(box, (width, height, width, height), strict=True))
    mask[y0:y1, x0:x1] = 255
    return mask


def draw_cat(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, colour=(226, 132, 48)) -> None:
    """A cat-like blob: body, head, ears, eyes, nose, whiskers, tail (centre of the body at cx, cy)."""
    dark = tuple(int(c * 0.6) for c in colour)
    draw.ellipse((cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r), fill=colour, outline=dark, width=max(1, int(r / 20)))
    draw.line(
        [(cx + 0.9 * r, cy), (cx + 1.4 * r, cy - 0.5 * r), (cx + 1.3 * r, cy - 1.0 * r)],
        fill=colour,
        width=max(2, int(r / 6)),
    )
    hx, hy, hr = cx - 0.8 * r, cy - 0.8 * r, 0.55 * r
    for side in (-1, 1):
        ear = [
            (hx + side * 0.2 * hr, hy - 0.7 * hr),
            (hx + side * 0.95 * hr, hy - 0.4 * hr),
            (hx + side * 0.8 * hr, hy - 1.4 * hr),
        ]
        draw.polygon(ear, fill=colour, outline=dark)
    draw.ellipse((hx - hr, hy - hr, hx + hr, hy + hr), fill=colour, outline=dark, width=max(1, int(r / 20)))
    for side in (-1, 1):
        ex = hx + side * 0.4 * hr
        draw.ellipse((ex - 0.15 * hr, hy - 0.25 * hr, ex + 0.15 * hr, hy + 0.05 * hr), fill=(40, 160, 60))
        draw.ellipse((ex - 0.05 * hr, hy - 0.2 * hr, ex + 0.05 * hr, hy), fill=(10, 10, 10))
        for dy in (-0.05, 0.1):
            draw.line([(hx + side * 0.2 * hr, hy + 0.35 * hr), (hx + side * 1.3 * hr, hy + (0.3 + dy) * hr)], fill=dark)
    draw.polygon(
        [(hx - 0.1 * hr, hy + 0.2 * hr), (hx + 0.1 * hr, hy + 0.2 * hr), (hx, hy + 0.35 * hr)], fill=(230, 110, 130)
    )


def cat_scene(width: int, height: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Sky, grass and a cat; returns the image and the cat's box in fractions."""
    image = _vertical_gradient(width, height, (120, 170, 235), (225, 235, 250))
    image[int(0.62 * height) :] = _vertical_gradient(width, height - int(0.62 * height), (90, 170, 70), (50, 120, 40))
    pil = Image.fromarray(_texture(image, 1))
    draw = ImageDraw.Draw(pil)
    r = 0.2 * min(width, height)
    cx, cy = 0.55 * width, 0.62 * height
    draw_cat(draw, cx, cy, r)
    box = ((cx - 1.4 * r) / width, (cy - 1.9 * r) / height, (cx + 1.6 * r) / width, (cy + 0.85 * r) / height)
    return np.asarray(pil), tuple(float(np.clip(v, 0, 1)) for v in box)


def house_scene(width: int, height: int) -> np.ndarray:
    """A house, a tree and the sun: a picture to restyle."""
    image = _vertical_gradient(width, height, (100, 160, 230), (200, 225, 250))
    image[int(0.7 * height) :] = (80, 150, 60)
    pil = Image.fromarray(_texture(image, 2))
    draw = ImageDraw.Draw(pil)
    w, h = width, height
    draw.ellipse((0.75 * w, 0.06 * h, 0.92 * w, 0.06 * h + 0.17 * w), fill=(255, 215, 60))
    draw.rectangle((0.2 * w, 0.45 * h, 0.55 * w, 0.75 * h), fill=(210, 80, 60), outline=(90, 30, 20), width=2)
    draw.polygon([(0.16 * w, 0.45 * h), (0.375 * w, 0.25 * h), (0.59 * w, 0.45 * h)], fill=(110, 60, 40))
    draw.rectangle((0.34 * w, 0.58 * h, 0.42 * w, 0.75 * h), fill=(80, 50, 30))
    for x in (0.24, 0.46):
        draw.rectangle((x * w, 0.5 * h, (x + 0.06) * w, 0.56 * h), fill=(180, 220, 250), outline=(255, 255, 255))
    draw.rectangle((0.72 * w, 0.5 * h, 0.76 * w, 0.75 * h), fill=(100, 70, 40))
    draw.ellipse((0.63 * w, 0.3 * h, 0.85 * w, 0.55 * h), fill=(40, 120, 50))
    return np.asarray(pil)


def room_scene(width: int, height: int) -> np.ndarray:
    """An interior: wall, wooden floor, a window, a red sofa."""
    w, h = width, height
    image = np.empty((h, w, 3), dtype=np.uint8)
    image[:] = (225, 210, 180)
    floor = int(0.68 * h)
    image[floor:] = (150, 100, 60)
    pil = Image.fromarray(_texture(image, 3))
    draw = ImageDraw.Draw(pil)
    for i in range(1, 8):
        y = floor + i * (h - floor) / 8
        draw.line([(0, y), (w, y)], fill=(120, 80, 45), width=1)
    draw.rectangle((0.6 * w, 0.12 * h, 0.88 * w, 0.45 * h), fill=(150, 200, 245), outline=(255, 255, 255), width=3)
    draw.line([(0.74 * w, 0.12 * h), (0.74 * w, 0.45 * h)], fill=(255, 255, 255), width=2)
    draw.rounded_rectangle((0.08 * w, 0.5 * h, 0.52 * w, 0.78 * h), radius=0.03 * w, fill=(180, 40, 45))
    draw.rounded_rectangle((0.08 * w, 0.42 * h, 0.52 * w, 0.58 * h), radius=0.03 * w, fill=(160, 30, 40))
    return np.asarray(pil)


ROOM_WALL_BOX = (0.0, 0.0, 0.56, 0.4)  # the wall left of the window, above the sofa
ROOM_SOFA_TOP_BOX = (0.12, 0.14, 0.48, 0.5)


def sign_scene(width: int, height: int, text: str = "OPEN") -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A brick wall with a white sign bearing ``text``; returns the image and the sign's box."""
    w, h = width, height
    pil = Image.fromarray(_texture(np.full((h, w, 3), (170, 75, 55), np.uint8), 4))
    draw = ImageDraw.Draw(pil)
    rows = 10
    for i in range(rows + 1):
        y = i * h / rows
        draw.line([(0, y), (w, y)], fill=(200, 190, 180), width=1)
        for j in range(6):
            x = (j + (0.5 if i % 2 else 0.0)) * w / 5
            draw.line([(x, y), (x, y + h / rows)], fill=(200, 190, 180), width=1)
    box = (0.18, 0.3, 0.82, 0.7)
    draw.rectangle(
        (box[0] * w, box[1] * h, box[2] * w, box[3] * h), fill=(245, 245, 240), outline=(40, 40, 40), width=3
    )
    font = _font(int(0.16 * h))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text(
        (0.5 * w - (right - left) / 2 - left, 0.5 * h - (bottom - top) / 2 - top), text, fill=(20, 20, 20), font=font
    )
    return np.asarray(pil), box


def cat_on_white(width: int, height: int) -> np.ndarray:
    """A reference object on a plain background: a grey tabby cat."""
    pil = Image.new("RGB", (width, height), (250, 250, 250))
    draw_cat(ImageDraw.Draw(pil), 0.55 * width, 0.6 * height, 0.28 * min(width, height), colour=(130, 130, 140))
    return np.asarray(pil)


def build_cases(width: int, height: int) -> list[Case]:
    """The standard set, at (width, height)."""
    cat, cat_box = cat_scene(width, height)
    sign, sign_box = sign_scene(width, height)
    room = room_scene(width, height)
    return [
        Case(
            "cat_to_dog",
            "object swap",
            "replace the cat with a dog, keep the background",
            (cat,),
            _mask_box(width, height, cat_box),
        ),
        Case("stylise", "stylisation", "turn it into a watercolor painting", (house_scene(width, height),)),
        Case(
            "interior_wall",
            "interior change",
            "paint the wall dark green and hang a framed painting on it",
            (room,),
            _mask_box(width, height, ROOM_WALL_BOX),
        ),
        Case(
            "sign_text",
            "text rendering",
            'change the text on the sign to "CLOSED" in red letters',
            (sign,),
            _mask_box(width, height, sign_box),
        ),
        Case(
            "compose_cat",
            "multi-reference composition",
            "put the cat from image 2 on the sofa in image 1",
            (room, cat_on_white(width, height)),
            _mask_box(width, height, ROOM_SOFA_TOP_BOX),
        ),
    ]


CASE_BUILDERS: dict[str, Callable[[int, int], list[Case]]] = {"standard": build_cases}
