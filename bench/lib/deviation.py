"""How far one output is from another: a variant's tensors or images against the baseline's, on the same inputs."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
