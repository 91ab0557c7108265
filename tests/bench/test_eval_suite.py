"""The evaluation harness on the tiny model with a tiny random CLIP: plumbing, not quality."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.lib.deviation import psnr
from bench.suites.eval.__main__ import main, parse_variant
from bench.suites.eval.cases import build_cases
from bench.suites.eval.metrics import ClipScorer, prompt_words, ssim


def _number(value) -> float:
    return float(value)  # "inf" in JSON parses too


def test_psnr_and_ssim_sanity() -> None:
    rng = np.random.default_rng(0)
    image = build_cases(64, 64)[0].images[0]
    noise = rng.integers(0, 256, image.shape, dtype=np.uint8)
    assert psnr(image, image) == math.inf
    assert ssim(image, image) == pytest.approx(1.0)
    assert ssim(image, noise) < 0.2 and psnr(image, noise) < 15
    shifted = np.clip(image.astype(int) + 5, 0, 255).astype(np.uint8)
    assert 30 < psnr(image, shifted) < 40
    region = np.zeros((64, 64), dtype=bool)
    region[:, :32] = True
    half = image.copy()
    half[:, 32:] = noise[:, 32:]
    assert psnr(half, image, region) == math.inf and psnr(half, image, ~region) < 15


def test_cases_cover_the_issue_and_are_deterministic() -> None:
    cases = build_cases(96, 64)
    assert {c.kind for c in cases} == {
        "object swap",
        "stylisation",
        "interior change",
        "text rendering",
        "multi-reference composition",
    }
    assert any(len(c.images) > 1 for c in cases)
    for case, again in zip(cases, build_cases(96, 64), strict=True):
        assert all(im.shape == (64, 96, 3) and im.dtype == np.uint8 for im in case.images)
        assert all(np.array_equal(a, b) for a, b in zip(case.images, again.images, strict=True))
        if case.mask is not None:
            assert case.mask.shape == (64, 96) and set(np.unique(case.mask)) == {0, 255}


def test_tiny_clip_score_is_a_bounded_number() -> None:
    prompts = [c.prompt for c in build_cases(64, 64)]
    scorer = ClipScorer.tiny(prompt_words(prompts))
    assert scorer.meaningless
    image = build_cases(64, 64)[0].images[0]
    first = scorer.score(image, prompts[0])
    assert 0.0 <= first <= 100.0 and first == scorer.score(image, prompts[0])


def test_variant_parsing() -> None:
    variant = parse_variant("fp8:quantization=fp8,fuse_qkv=true,default_steps=8")
    assert variant.name == "fp8"
    assert variant.overrides == {"quantization": "fp8", "fuse_qkv": True, "default_steps": 8}
    cache = parse_variant('cache:step_cache=magcache,step_cache_options={"threshold": 0.1, "max_skip_steps": 2}')
    assert cache.overrides == {"step_cache": "magcache", "step_cache_options": {"threshold": 0.1, "max_skip_steps": 2}}


def test_harness_writes_table_and_contact_sheet(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    main(
        [
            *("--model", "tiny-dev", "--out", str(out), "--steps", "1,2", "--size", "64"),
            *("--variant", "eager:compile=none", "--no-warmup", "--latent-stage"),
        ]
    )
    payload = json.loads((out / "results.json").read_text())
    rows = payload["rows"]
    assert len(rows) == 5 * 2
    assert payload["meta"]["clip_meaningless"] and payload["meta"]["variants"] == {"eager": {"compile": "none"}}
    assert {(s["model"], s["variant"], s["steps"]) for s in payload["summary"]} == {
        ("tiny-dev", "eager", 1),
        ("tiny-dev", "eager", 2),
    }
    for row in rows:
        assert 0.0 <= row["clip"] <= 100.0 and row["latency_s"] > 0 and row["peak_vram_gb"] >= 0
        assert row["mask_applied"] == row["masked"]
        if row["masked"]:
            assert _number(row["psnr_outside"]) >= 35.0
            assert row["ssim_outside"] == pytest.approx(1.0)
            assert _number(row["psnr_inside"]) < 25.0  # the masked region was edited
            assert _number(row["psnr_outside_latent"]) < _number(row["psnr_outside"])  # the composite matters
        else:
            assert row["psnr_outside"] is None
    markdown = (out / "results.md").read_text()
    assert "meaningless" in markdown and "| tiny-dev | eager | 2 | cat_to_dog |" in markdown
    assert len(list((out / "images").glob("*.png"))) == 10
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.width == 6 + (3 + 2) * (192 + 6) and sheet.height > 5 * 192
    assert np.asarray(sheet.convert("RGB")).std() > 10


def test_without_masks_shows_what_the_mask_buys(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    main(
        [
            *("--model", "tiny-klein", "--out", str(out), "--steps", "1", "--size", "64"),
            *("--cases", "cat_to_dog", "--without-masks", "--no-warmup"),
        ]
    )
    rows = {row["case"]: row for row in json.loads((out / "results.json").read_text())["rows"]}
    assert set(rows) == {"cat_to_dog", "cat_to_dog-nomask"}
    masked, prompt_only = rows["cat_to_dog"], rows["cat_to_dog-nomask"]
    assert masked["mask_applied"] and not prompt_only["mask_applied"] and not prompt_only["masked"]
    assert _number(masked["psnr_outside"]) >= 35.0 > _number(prompt_only["psnr_outside"])
    assert "region (mask not sent)" not in (out / "results.md").read_text()  # a sheet label, not a table cell
