"""Edit-quality evaluation: procedural cases through Flux2Engine, CLIP score, PSNR/SSIM outside the
mask, latency and peak VRAM per model and setting, written as a table and a contact sheet.

``python -m bench eval --model tiny-dev --out DIR`` (see docs/evaluation.md).
"""
