"""Decoded images to uint8 arrays, on the pipeline's device."""

from __future__ import annotations

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) floats in [0, 1] -> (N, H, W, 3) uint8, rounded on the tensor's device.

    On a GPU this moves 3 bytes a pixel to the host instead of 12 and skips ~20 ms of numpy
    float work for a 1024² image.
    """
    return (images.float() * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
