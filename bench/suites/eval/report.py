"""Reports: results.json, results.md (per-case rows and a per-setting summary) and contact_sheet.png."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLUMNS = [
    ("model", "model"),
    ("variant", "variant"),
    ("steps", "steps"),
    ("case", "case"),
    ("kind", "kind"),
    ("masked", "mask"),
    ("step_cache", "step cache"),
    ("clip", "CLIP"),
    ("clip_source", "CLIP input"),
    ("psnr_outside", "PSNR out (dB)"),
    ("ssim_outside", "SSIM out"),
    ("psnr_inside", "PSNR in (dB)"),
    ("psnr_outside_latent", "PSNR out, latent only"),
    ("psnr_outside_latent_vs_vae", "latent only vs VAE round trip"),
    ("latency_s", "latency (s)"),
    ("step_s", "s/step"),
    ("peak_vram_gb", "peak VRAM (GB)"),
]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞ (identical)"
        if math.isnan(value):
            return "n/a"
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return str(value)  # "inf" / "nan": strict JSON has neither
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (model, variant, steps): mean CLIP, worst preservation, mean latency, max VRAM."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["variant"], row["steps"]), []).append(row)
    summary = []
    for (model, variant, steps), group in groups.items():
        masked = [r for r in group if r["masked"]]
        summary.append(
            {
                "model": model,
                "variant": variant,
                "steps": steps,
                "cases": len(group),
                "clip_mean": float(np.mean([r["clip"] for r in group])),
                "psnr_outside_min": min((r["psnr_outside"] for r in masked), default=None),
                "ssim_outside_min": min((r["ssim_outside"] for r in masked), default=None),
                "latency_mean_s": float(np.mean([r["latency_s"] for r in group])),
                "peak_vram_gb_max": max(r["peak_vram_gb"] for r in group),
            }
        )
    return summary


def write_json(path: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    payload = {"meta": meta, "summary": summarise(rows), "rows": rows}
    path.write_text(json.dumps(_json_safe(payload), indent=2, allow_nan=False) + "\n")


def write_markdown(path: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    lines = ["# FLUX.2 edit evaluation", ""]
    for warning in meta.get("warnings", []):
        lines += [f"> **{warning}**", ""]
    lines += [
        f"- command: `{meta['command']}`",
        f"- CLIP model: `{meta['clip_model']}`; device: {meta['device']}; size: {meta['size']}; seed: {meta['seed']}",
        "- PSNR/SSIM out: the output against the input (first image resized to the output size) outside the "
        "mask; SSIM out averages the SSIM map (11x11 Gaussian window) over outside pixels whose window lies "
        "wholly outside the mask; PSNR in: the output against the input inside the mask (low = the region "
        "changed). Unmasked cases edit everywhere: -. PSNR out, latent only: the same run without the pixel "
        "composite (--latent-stage); latent only vs VAE round trip: that output against the input encoded and "
        "decoded by the model's VAE, the most the latent stage alone can keep.",
        "",
        "## Summary per model and setting",
        "",
        "| model | variant | steps | cases | mean CLIP | min PSNR out (dB) | min SSIM out | mean latency (s) "
        "| max peak VRAM (GB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summarise(rows):
        cells = [
            s["model"],
            s["variant"],
            s["steps"],
            s["cases"],
            s["clip_mean"],
            s["psnr_outside_min"],
            s["ssim_outside_min"],
            s["latency_mean_s"],
            s["peak_vram_gb_max"],
        ]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    columns = [c for c in COLUMNS if any(row.get(c[0]) is not None for row in rows)]
    lines += ["", "## Cases", "", "| " + " | ".join(t for _, t in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(key)) for key, _ in columns) + " |")
    path.write_text("\n".join(lines) + "\n")


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return ImageFont.load_default()


def _thumb(image: np.ndarray | None, tile: int) -> Image.Image:
    canvas = Image.new("RGB", (tile, tile), (235, 235, 235))
    if image is None:
        return canvas
    pil = Image.fromarray(image)
    scale = tile / max(pil.width, pil.height)  # small images are enlarged (nearest: pixels stay visible)
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST
    pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))), resample)
    canvas.paste(pil, ((tile - pil.width) // 2, (tile - pil.height) // 2))
    return canvas


def mask_overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with the editable region tinted magenta."""
    tint = np.array([255, 0, 255], dtype=np.float32)
    editable = (mask >= 128)[..., None]
    return np.where(editable, 0.5 * image + 0.5 * tint, image).astype(np.uint8)


def contact_sheet(path: Path, blocks: list[dict[str, Any]], tile: int = 192) -> None:
    """Inputs and outputs side by side, with labels.

    ``blocks``: one per (model, variant): {"title", "steps": [...], "cases": [{"name", "images", "mask",
    "outputs": {steps: image}, "labels": {steps: text}}]}. Columns: image 1, image 2, mask, outputs.
    """
    label_h, title_h, pad = 30, 26, 6
    font, title_font = _font(11), _font(15)
    n_cols = 3 + max(len(b["steps"]) for b in blocks)
    width = pad + n_cols * (tile + pad)
    height = pad
    for block in blocks:
        height += title_h + len(block["cases"]) * (tile + label_h + pad)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = pad
    for block in blocks:
        draw.text((pad, y + 4), block["title"], fill=(0, 0, 0), font=title_font)
        y += title_h
        for case in block["cases"]:
            images = case["images"]
            tiles: list[tuple[np.ndarray | None, str]] = [
                (images[0], f"{case['name']}: input"),
                (images[1] if len(images) > 1 else None, "image 2" if len(images) > 1 else "(one image)"),
                (
                    mask_overlay(images[0], case["mask"]) if case["mask"] is not None else None,
                    case.get("mask_label", "mask" if case["mask"] is not None else "(no mask)"),
                ),
            ]
            tiles += [(case["outputs"].get(s), case["labels"].get(s, f"{s} steps")) for s in block["steps"]]
            for col, (image, label) in enumerate(tiles):
                x = pad + col * (tile + pad)
                sheet.paste(_thumb(image, tile), (x, y))
                for line_no, line in enumerate(label.split("\n")[:2]):
                    draw.text((x + 2, y + tile + 2 + 13 * line_no), line, fill=(20, 20, 20), font=font)
            y += tile + label_h + pad
    sheet.save(path, format="PNG")
