"""Internal types: what the serving layer resolves a request into and what crosses the Ray handle to the model
replicas and their engine (no torch, no Ray, no HTTP).

Images cross deployment boundaries as ``uint8`` arrays of shape (H, W, 3), or as JPEG files when the model replica
encoded them on its GPU. A mask has one representation, made once in the ingress (``openai/images.py``): a
``bool`` array of the output's shape (height, width), True where the image may change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deployments.config import ModelConfig

ADAPTERS_PARAM = "lora"  # the request field that names adapters: every error about one points at it


@dataclass(frozen=True)
class AdapterStack:
    """A request's LoRA adapters, resolved: (name, scale) pairs of configured adapters, each name once.

    Kept in one canonical order whatever the order given (sorted by name, zero scales dropped), so equal stacks are
    equal values: they share a batch and a multiplexed replica, and the engine's slots give them the same bytes.
    """

    entries: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        canonical = tuple(sorted((name, float(scale)) for name, scale in self.entries if scale != 0.0))
        if len({name for name, _ in canonical}) != len(canonical):
            raise ValueError(f"an adapter is named twice in {canonical}")
        object.__setattr__(self, "entries", canonical)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def id(self) -> str:
        """The stack as a string ("" for none): Ray Serve's multiplexed model id and the ``x-lora`` header."""
        return "+".join(f"{name}:{scale:g}" for name, scale in self.entries)


@dataclass(frozen=True)
class Route:
    """Where the serving layer sends a request: a served model and the adapters to run it with."""

    model: ModelConfig
    adapters: AdapterStack = field(default_factory=AdapterStack)


@dataclass(frozen=True)
class ImageRequest:
    """One request as the serving layer resolved it: the engine runs it as given and resolves nothing again."""

    prompt: str
    width: int
    height: int
    images: tuple[np.ndarray, ...] = ()
    mask: np.ndarray | None = None  # (height, width) bool, True where the image may change
    n: int = 1
    seed: int = 0
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    step_cache: bool | None = None  # None: the model's setting; False: off for this request
    jpeg_quality: int | None = None  # the client wants JPEG: an engine that encodes on its GPU returns files
    adapters: AdapterStack = field(default_factory=AdapterStack)

    def __post_init__(self) -> None:
        if self.mask is not None and (self.mask.dtype != np.bool_ or self.mask.shape != (self.height, self.width)):
            raise ValueError(
                f"mask must be bool of the output's shape {(self.height, self.width)}, got {self.mask.dtype} "
                f"{self.mask.shape}"
            )

    @property
    def batch_key(self) -> tuple | None:
        """Text-to-image requests with equal keys can share one pipeline call; edits never do."""
        if self.images or self.mask is not None:
            return None
        return (self.width, self.height, self.num_inference_steps, self.guidance_scale, self.step_cache, self.adapters)

    @property
    def shape_key(self) -> tuple[int, int, int]:
        """(width, height, references): what decides a compiled graph's shapes."""
        return (self.width, self.height, len(self.images))


@dataclass(frozen=True)
class EncodedImage:
    """An image file encoded where the pixels were made (JPEG on the GPU)."""

    data: bytes
    format: str  # "jpeg"
    width: int
    height: int


@dataclass
class AdapterStats:
    """Cumulative counters for metrics."""

    loads: int = 0  # adapters read from their source into device memory
    hits: int = 0  # adapters asked for while resident
    evictions: int = 0
    load_failures: int = 0
    load_s: float = 0.0
    swap_s: float = 0.0  # copying weights into slots and setting scales


@dataclass
class CacheStats:
    """Cumulative counters of one exact cache (for metrics), and what it holds now."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    bytes: int = 0  # held now
    entries: int = 0  # held now


@dataclass(frozen=True)
class Timings:
    """Where a request's time went inside the model replica (seconds)."""

    started_at: float = 0.0  # wall clock (time.time()) when the engine began the request
    generate_s: float = 0.0  # the pipeline call
    output_s: float = 0.0  # images off the device (JPEG encoded there, where configured)
    step_s: float = 0.0  # generate_s / steps
    peak_vram_gb: float = 0.0
    batch_size: int = 1  # requests that shared the pipeline call
    adapter_s: float = 0.0  # LoRA adapters loaded (when not resident) and switched in before the call


@dataclass
class ImageResult:
    """What the engine returns: ``n`` images plus what the client needs to reproduce them."""

    images: list[np.ndarray | EncodedImage]
    seed: int
    num_inference_steps: int
    guidance_scale: float
    weights: str  # "pretrained" | "random-tiny" | "random-full": demo outputs are always labelled
    timings: Timings = field(default_factory=Timings)
    mask_applied: bool = False
    step_cache: bool = False


@dataclass(frozen=True)
class StepProgress:
    """Streamed after every denoising step."""

    step: int
    num_steps: int
    elapsed_s: float


@dataclass(frozen=True)
class PartialImage:
    """A preview decoded from the intermediate latents of the first image."""

    index: int
    image: np.ndarray


StreamEvent = StepProgress | PartialImage | ImageResult  # what a model's generate_stream yields, the result last


@dataclass(frozen=True)
class ModelInfo:
    """Describes a loaded engine: shown by /v1/models, /readyz, logs and response headers."""

    name: str
    source: str
    family: str  # "dev" | "klein"
    weights: str  # "pretrained" | "random-tiny" | "random-full"
    device: str
    dtype: str
    default_steps: int
    default_guidance_scale: float
    compile: str
    quantization: str = "none"  # "fp8": the transformer's linears
    attention_backend: str = "default"
    device_jpeg: bool = False  # JPEG responses are encoded on the GPU
    adapters: tuple[str, ...] = ()  # LoRA adapters requests can name
    warmup_s: float = 0.0
    load_s: float = 0.0

    @property
    def is_demo(self) -> bool:
        return self.weights != "pretrained"

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "is_demo": self.is_demo}
