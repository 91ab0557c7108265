"""What one evaluation runs: models, step counts, variants (plain data, no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Variant:
    """A named set of ModelConfig overrides, e.g. ``fp8`` = {"quantization": "fp8"}."""

    name: str = "default"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalSettings:
    models: list[str]
    steps: list[int]
    variants: list[Variant]
    width: int = 1024
    height: int = 1024
    seed: int = 0
    warmup: bool = True  # one untimed run per new shape first, so compilation is not counted as latency
    latent_stage: bool = False  # also measure masked cases without the pixel composite
    common_overrides: dict[str, Any] = field(default_factory=dict)
