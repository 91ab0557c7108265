"""How far one output is from another: a variant's tensors or images against the baseline's, on the same inputs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def compare(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Relative L2 and cosine of ``out`` against ``ref`` (float32, flattened), and whether ``out`` is finite."""
    import torch

    out, ref = out.float().flatten(), ref.float().flatten()
    return {
        "rel_l2": round(((out - ref).norm() / ref.norm()).item(), 5),
        "cosine": round(torch.nn.functional.cosine_similarity(out, ref, dim=0).item(), 6),
        "finite": bool(torch.isfinite(out).all().item()),
    }


def deviation(image: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Relative L2 and cosine of two uint8 images, centred on mid-grey: the cosine then compares what the images
    show, not the offset every pixel value shares."""
    x = image.astype(np.float64).ravel() - 127.5
    y = reference.astype(np.float64).ravel() - 127.5
    return {
        "rel_l2": float(np.linalg.norm(x - y) / np.linalg.norm(y)),
        "cosine": float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))),
    }


def psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float:
    """PSNR in dB of uint8 images over ``region`` ((H, W) bool); ``inf`` when identical there."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    if region is not None:
        diff = diff[region]
    if diff.size == 0:
        return float("nan")
    mse = float(np.mean(diff**2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))
