"""Edit-quality evaluation: procedural cases through Flux2Engine, CLIP score, PSNR/SSIM outside the
mask, latency and peak VRAM per model and setting, written as a table and a contact sheet.

``python -m bench.eval --model tiny-dev --out DIR`` (see docs/evaluation.md).
"""

from bench.eval.cases import Case, build_cases
from bench.eval.metrics import ClipScorer, psnr, ssim
from bench.eval.runner import EvalSettings, Variant, run_eval

__all__ = ["Case", "ClipScorer", "EvalSettings", "Variant", "build_cases", "psnr", "run_eval", "ssim"]
