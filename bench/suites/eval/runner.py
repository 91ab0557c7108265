"""Run the cases through Flux2Engine for each model, setting (ModelConfig overrides) and step count."""

from __future__ import annotations

import gc
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.lib.deviation import psnr
from bench.suites.eval.cases import Case
from bench.suites.eval.metrics import ClipScorer, dilate, ssim
from bench.suites.eval.report import contact_sheet, write_json, write_markdown
from bench.suites.eval.settings import EvalSettings
from deployments.config import ModelConfig
from deployments.engine import Flux2Engine
from deployments.engine.masking import resize_source, run_masked_edit, vae_round_trip
from deployments.engine.pixels import to_uint8
from deployments.openai.images import mask_at
from deployments.types import ImageRequest

logger = logging.getLogger(__name__)
SSIM_WINDOW = 11


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def _request(case: Case, settings: EvalSettings, steps: int) -> ImageRequest:
    return ImageRequest(
        prompt=case.prompt,
        width=settings.width,
        height=settings.height,
        images=case.images,
        mask=mask_at(case.mask, settings.width, settings.height) if case.mask is not None and case.send_mask else None,
        seed=settings.seed,
        num_inference_steps=steps,
    )


def evaluate_case(
    engine: Flux2Engine, case: Case, settings: EvalSettings, steps: int, scorer: ClipScorer
) -> tuple[dict[str, Any], np.ndarray]:
    """One generation and its figures."""
    request = _request(case, settings, steps)
    result = engine.generate(request)
    output = result.images[0]
    source = resize_source(case.images[0], settings.width, settings.height)
    row: dict[str, Any] = {
        "case": case.name,
        "kind": case.kind,
        "prompt": case.prompt,
        "masked": request.mask is not None,
        "mask_applied": result.mask_applied,
        "clip": scorer.score(output, case.prompt),
        "clip_source": scorer.score(source, case.prompt),
        "psnr_outside": None,
        "ssim_outside": None,
        "psnr_inside": None,
        "ssim_whole": ssim(output, source),
        "latency_s": result.timings.generate_s,
        "step_s": result.timings.step_s,
        "peak_vram_gb": result.timings.peak_vram_gb,
        "weights": result.weights,
        "step_cache": result.step_cache,  # whether a step cache ran for this request
    }
    if case.mask is not None:
        editable = mask_at(case.mask, settings.width, settings.height)
        row["psnr_outside"] = psnr(output, source, ~editable)
        # SSIM over outside pixels whose 11x11 window lies wholly outside the mask (PSNR covers the band)
        row["ssim_outside"] = ssim(output, source, ~dilate(editable, SSIM_WINDOW // 2))
        row["psnr_inside"] = psnr(output, source, editable)
        if settings.latent_stage and request.mask is not None:
            guidance = result.guidance_scale if getattr(engine, "takes_guidance", True) else None  # KV pipeline: none
            raw = to_uint8(
                run_masked_edit(engine.pipeline, request, steps, guidance, engine.conditioning, composite=False)
            )[0]
            row["psnr_outside_latent"] = psnr(raw, source, ~editable)
            row["psnr_outside_latent_vs_vae"] = psnr(raw, vae_round_trip(engine.pipeline, source), ~editable)
    return row, output


def run_eval(settings: EvalSettings, cases: list[Case], scorer: ClipScorer, out_dir: Path, command: str = "") -> dict:
    """Run everything, write results.json, results.md, contact_sheet.png and images/; return the JSON payload."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "images").mkdir(exist_ok=True)
    rows: list[dict[str, Any]] = []
    blocks: list[dict[str, Any]] = []
    weights_seen: set[str] = set()
    device = "cpu"
    for model in settings.models:
        for variant in settings.variants:
            config = ModelConfig(source=model, **{**settings.common_overrides, **variant.overrides})
            logger.info("loading %s (%s)", model, variant.name)
            engine = Flux2Engine.from_config(config)
            device = str(engine.loaded.device)
            weights_seen.add(engine.loaded.weights)
            block = {
                "title": f"{model} · {variant.name} · {engine.loaded.weights} · {settings.width}x{settings.height}",
                "steps": settings.steps,
                "cases": [],
            }
            warmed: set[tuple[int, int, int]] = set()
            for case in cases:
                entry = {"name": case.name, "images": case.images, "mask": case.mask, "outputs": {}, "labels": {}}
                if case.mask is not None and not case.send_mask:
                    entry["mask_label"] = "region (mask not sent)"
                for steps in settings.steps:
                    if settings.warmup and _request(case, settings, steps).shape_key not in warmed:
                        t0 = time.perf_counter()
                        engine.generate(_request(case, settings, min(2, steps)))
                        warmed.add(_request(case, settings, steps).shape_key)
                        logger.info("warm-up of %s took %.2fs", case.name, time.perf_counter() - t0)
                    row, output = evaluate_case(engine, case, settings, steps, scorer)
                    row = {"model": model, "variant": variant.name, "steps": steps, **row}
                    rows.append(row)
                    name = f"{_slug(model)}_{_slug(variant.name)}_{steps}_{case.name}.png"
                    Image.fromarray(output).save(out_dir / "images" / name)
                    entry["outputs"][steps] = output
                    psnr_text = "" if row["psnr_outside"] is None else f" PSNR {_short(row['psnr_outside'])}"
                    entry["labels"][steps] = f"{steps} steps {row['latency_s']:.2f}s\nCLIP {row['clip']:.1f}{psnr_text}"
                    logger.info("%s %s %d steps %s: %s", model, variant.name, steps, case.name, row)
                block["cases"].append(entry)
            blocks.append(block)
            del engine
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    warnings = []
    if scorer.meaningless:
        warnings.append(f"CLIP scores come from {scorer.label}, a tiny RANDOMLY INITIALISED CLIP: meaningless figures")
    if weights_seen - {"pretrained"}:
        warnings.append(
            f"images come from models with random weights ({', '.join(sorted(weights_seen - {'pretrained'}))}): "
            "quality figures are meaningless; latency and preservation show plumbing only"
        )
    meta = {
        "command": command,
        "clip_model": scorer.label,
        "clip_meaningless": scorer.meaningless,
        "device": device,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "size": f"{settings.width}x{settings.height}",
        "seed": settings.seed,
        "steps": settings.steps,
        "variants": {v.name: v.overrides for v in settings.variants},
        "common_overrides": settings.common_overrides,
        "warnings": warnings,
    }
    write_json(out_dir / "results.json", meta, rows)
    write_markdown(out_dir / "results.md", meta, rows)
    contact_sheet(out_dir / "contact_sheet.png", blocks)
    return {"meta": meta, "rows": rows}


def _short(value: float) -> str:
    return "inf" if np.isinf(value) else f"{value:.1f}"
