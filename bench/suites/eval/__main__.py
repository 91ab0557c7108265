"""Edit quality: ``python -m bench eval --model tiny-dev --out /tmp/eval`` (run from the repository root).

Procedural cases through Flux2Engine per model, variant and step count: CLIP score, PSNR/SSIM outside the
mask, latency and peak VRAM, written as a table, JSON and a contact sheet (docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from bench.lib.cli import parse_overrides, suite_parser
from bench.suites.eval.cases import build_cases, without_masks
from bench.suites.eval.settings import EvalSettings, Variant


def parse_variant(text: str) -> Variant:
    """``NAME`` or ``NAME:key=value,...``, e.g. ``fp8:quantization=fp8`` or ``magcache:step_cache=magcache``."""
    name, _, rest = text.partition(":")
    return Variant(name=name, overrides=parse_overrides(rest))


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    width_px, height_px = int(width), int(height or width)
    if width_px % 16 or height_px % 16:
        raise argparse.ArgumentTypeError("sizes must be multiples of 16")
    return width_px, height_px


def build_parser() -> argparse.ArgumentParser:
    parser = suite_parser("eval", __doc__)
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        help="model source (repeatable): tiny-dev, tiny-klein, black-forest-labs/FLUX.2-klein-4B, a local folder, ...",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--steps", default="4,8,20,28,50", help="comma-separated step counts (default %(default)s)")
    parser.add_argument(
        "--variant",
        action="append",
        type=parse_variant,
        default=None,
        help="NAME[:key=value,...] ModelConfig overrides, repeatable (default: one 'default')",
    )
    parser.add_argument(
        "--option",
        type=parse_overrides,
        default={},
        help="key=value,... ModelConfig overrides for every run (e.g. device=cpu,compile=none)",
    )
    parser.add_argument(
        "--clip",
        default="tiny",
        help="CLIP model folder or hub id, e.g. openai/clip-vit-large-patch14; "
        "'tiny' (default) = a random tiny CLIP built offline, meaningless figures",
    )
    parser.add_argument("--size", type=parse_size, default=(1024, 1024), help="WxH or S of images and outputs")
    parser.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--latent-stage",
        action="store_true",
        help="also run masked cases without the pixel composite and report their PSNR outside",
    )
    parser.add_argument(
        "--without-masks",
        action="store_true",
        help="also run each masked case without its mask (NAME-nomask), measured on the same region",
    )
    parser.add_argument("--no-warmup", action="store_true", help="time the first run of each shape too")
    return parser


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    from bench.suites.eval.metrics import ClipScorer, prompt_words
    from bench.suites.eval.runner import run_eval

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    width, height = args.size
    cases = build_cases(width, height)
    if args.cases:
        wanted = [name.strip() for name in args.cases.split(",") if name.strip()]
        unknown = set(wanted) - {case.name for case in cases}
        if unknown:
            raise SystemExit(f"unknown cases {sorted(unknown)}; known: {[case.name for case in cases]}")
        cases = [case for case in cases if case.name in wanted]
    if args.without_masks:
        cases = cases + without_masks(cases)
    if args.clip == "tiny":
        scorer = ClipScorer.tiny(prompt_words([case.prompt for case in cases]))
    else:
        import torch

        scorer = ClipScorer.from_pretrained(args.clip, device="cuda" if torch.cuda.is_available() else "cpu")
    settings = EvalSettings(
        models=args.model,
        steps=[int(s) for s in args.steps.split(",") if s.strip()],
        variants=args.variant or [Variant()],
        width=width,
        height=height,
        seed=args.seed,
        warmup=not args.no_warmup,
        latent_stage=args.latent_stage,
        common_overrides=args.option,
    )
    command = shlex.join(["python", "-m", "bench", "eval", *argv])
    result = run_eval(settings, cases, scorer, args.out, command=command)
    print((args.out / "results.md").read_text())
    return result


if __name__ == "__main__":
    main()
