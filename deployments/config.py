"""Typed configuration: one object flows from ``serve_config.yaml`` args to the engine.

It describes the service and resolves no request (the serving layer does, in ``openai/``). No torch, no Ray and no
other module of the package here, so the ingress, the model deployment and the engine can all import it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TINY_SOURCES = ("tiny-dev", "tiny-klein", "tiny-klein-kv")
RANDOM_SOURCES = ("random-dev", "random-klein-4b", "random-klein-9b")
AUTO_GPU_SOURCE = "black-forest-labs/FLUX.2-klein-4B"
AUTO_CPU_SOURCE = "tiny-dev"
FLUX2_MAX_REFERENCES = 10
SIZE_MULTIPLE = 16  # FLUX.2 sizes: the VAE's 8x downscale, then 2x2 patches per token


def on_grid(*sides: int) -> bool:
    """Whether every side is a multiple of ``SIZE_MULTIPLE``, as FLUX.2's latent grid needs."""
    return all(side % SIZE_MULTIPLE == 0 for side in sides)


def weights_label(source: str) -> str:
    """What a source's weights are: every response and listing labels demo outputs by this."""
    if source in TINY_SOURCES:
        return "random-tiny"
    if source in RANDOM_SOURCES:
        return "random-full"
    return "pretrained"


StrictT = TypeVar("StrictT", bound="_Strict")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def reconfigured(self: StrictT, user_config: dict[str, Any] | None, live: Sequence[str]) -> StrictT:
        """This config with a deployment's Serve ``user_config`` applied: its keys replace these, validated as the
        args are; a key left out keeps this config's value. Only the ``live`` keys may be given there: any other
        needs a new replica, so it belongs under ``args``."""
        changes = user_config or {}
        if not isinstance(changes, dict):
            raise ValueError(f"user_config must be a mapping of {', '.join(live)}, got {type(changes).__name__}")
        if unknown := sorted(set(changes) - set(live)):
            raise ValueError(
                f"user_config may set {', '.join(live)}; {', '.join(unknown)} need a new replica: set them in args"
            )
        return type(self).model_validate({**self.model_dump(), **changes})


class Shape(_Strict):
    """A warm-up shape bucket: output size and number of reference images (0 = text-to-image)."""

    width: int = Field(ge=64, le=4096, description="output width, a multiple of 16")
    height: int = Field(ge=64, le=4096, description="output height, a multiple of 16")
    references: int = Field(
        default=0, ge=0, le=FLUX2_MAX_REFERENCES, description="reference images of the bucket; 0 = text-to-image"
    )

    @model_validator(mode="after")
    def _on_grid(self) -> Shape:
        if not on_grid(self.width, self.height):
            raise ValueError(f"shape {self.width}x{self.height} must be a multiple of {SIZE_MULTIPLE}")
        return self


class Limits(_Strict):
    """Request limits, enforced by the ingress before any GPU work."""

    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0, description="request body, refused while read (413)")
    body_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="a request body must arrive within this, plus one second per min_body_bytes_per_s of it, or "
        "the client gets 408 and its connection is closed: a slow or idle sender cannot hold a request slot",
    )
    min_body_bytes_per_s: int = Field(
        default=256 * 1024, gt=0, description="the slowest upload rate a body may arrive at, see body_timeout_s"
    )
    max_input_pixels: int = Field(
        default=4096 * 4096, gt=0, description="pixels of one uploaded image, checked before decoding (bomb guard)"
    )
    max_reference_images: int = Field(
        default=4, ge=1, le=FLUX2_MAX_REFERENCES, description="images per edit; FLUX.2 takes up to 10"
    )
    min_side: int = Field(default=64, ge=16, description="smallest side of an output or a reference, px")
    max_side: int = Field(default=2048, ge=64, description="largest side of an output, px")
    max_output_pixels: int = Field(default=2048 * 2048, gt=0, description="width x height of an output")
    max_aspect_ratio: float = Field(default=8.0, ge=1.0, description="long side / short side, outputs and references")
    max_n: int = Field(default=4, ge=1, le=16, description="images per request")
    max_prompt_chars: int = Field(default=4000, ge=1, description="prompt length")
    max_steps: int = Field(default=100, ge=1, description="num_inference_steps a request may ask for")
    max_guidance_scale: float = Field(default=20.0, ge=0.0, description="guidance_scale a request may ask for")
    request_timeout_s: float = Field(default=600.0, gt=0, description="a generation running longer is answered 504")
    no_replica_wait_s: float = Field(
        default=0.0,
        ge=0.0,
        description="how long a request for a model with no running replica waits for one before a 503 with "
        "Retry-After; 0 answers at once. Set it above the replica start time for models that scale from zero",
    )


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class AdapterSpec(_Strict):
    """One LoRA adapter that requests can name."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="the id requests send")
    source: str = Field(min_length=1, description="hub repo id, local folder or .safetensors file")
    weight_name: str | None = Field(
        default=None, description="the .safetensors file in a hub repo or folder; default: the one diffusers picks"
    )
    revision: str | None = Field(default=None, description="hub revision")
    scale: float = Field(default=1.0, allow_inf_nan=False, description="strength when a request gives none")

    @field_validator("source", "weight_name")
    @classmethod
    def _no_pickle(cls, value: str | None) -> str | None:
        if value is not None and value.lower().endswith(PICKLE_SUFFIXES):
            raise ValueError(f"{value!r} is a pickle checkpoint, which runs code when loaded: use .safetensors")
        return value


class AdapterSettings(_Strict):
    """The LoRA adapters a model serves and the limits on them."""

    adapters: tuple[AdapterSpec, ...] = Field(
        default=(), description="adapters by name; each is a model <model>/<name> to the OpenAI API"
    )
    max_loaded: int = Field(
        default=4, ge=1, le=64, description="adapters kept in device memory; the least recently used is evicted"
    )
    max_rank: int = Field(
        default=64,
        ge=1,
        le=512,
        description="rank every slot is padded to; an adapter of higher rank is refused. A slot holds max_rank x "
        "(in + out features) weights per linear layer of the transformer",
    )
    max_per_request: int = Field(
        default=1,
        ge=1,
        le=8,
        description="adapters one request can stack; each is a slot whose LoRA branch every request of the model "
        "computes (zeros when unused), about 2 x max_rank / width of a linear layer's FLOPs per slot",
    )
    max_scale: float = Field(default=4.0, gt=0, description="the largest |scale| a request may give an adapter")

    @model_validator(mode="after")
    def _consistent(self) -> AdapterSettings:
        names = [spec.name for spec in self.adapters]
        if len(set(names)) != len(names):
            raise ValueError(f"adapter names must be unique, got {names}")
        if self.max_loaded < self.max_per_request:
            raise ValueError("max_loaded must hold at least the max_per_request adapters of one request")
        for spec in self.adapters:
            if abs(spec.scale) > self.max_scale:
                raise ValueError(f"adapter {spec.name!r}: scale {spec.scale} is over max_scale {self.max_scale}")
        return self


class ContextParallel(_Strict):
    """One replica spans ``degree`` GPUs of one host to cut one request's latency (docs/multi_gpu.md)."""

    degree: int = Field(ge=2, le=64, description="ranks (GPUs) per replica")
    mode: Literal["ulysses", "ring"] = Field(
        default="ulysses",
        description="ulysses: all-to-all over heads (heads must divide by degree); ring: K/V rotated, needs an "
        "attention backend returning log-sum-exp (flash, _native_cudnn, ...)",
    )
    any_length: bool = Field(
        default=False,
        description="diffusers' ulysses_anything / ring_anything: sequences and heads not divisible by the degree "
        "(uneven all-gathers: NCCL only, extra size exchange per attention call). Off: such sizes get HTTP 400",
    )
    timeout_s: float = Field(default=600.0, gt=0, description="torch.distributed collective timeout")


class ModelConfig(_Strict):
    """One served FLUX.2 model: where its weights come from and how the engine runs it."""

    name: str = Field(default="", description="served model id; defaults to the source")
    source: str = Field(
        default="auto",
        description="auto | tiny-dev | tiny-klein | tiny-klein-kv | random-dev | random-klein-4b | random-klein-9b "
        "| hub id | local folder",
    )
    revision: str | None = Field(default=None, description="hub revision (branch, tag or commit)")
    device: Literal["auto", "cuda", "cpu"] = Field(default="auto", description="auto: the GPU when there is one")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto", description="auto: bfloat16 on a GPU, float32 on a CPU"
    )
    compile: Literal["auto", "none", "regional", "full"] = Field(
        default="auto",
        description="auto: regional (each repeated transformer block compiled once) on a GPU, none on a CPU; full: "
        "one graph of the whole transformer, for a much longer cold warm-up",
    )
    compile_mode: str | None = Field(
        default=None,
        description="torch.compile mode of the transformer, e.g. max-autotune-no-cudagraphs (the VAE and the text "
        "encoder use inductor's default)",
    )
    compile_cache_dir: str | None = Field(
        default=None, description="persistent inductor cache; default: $HF_HOME/flux2-serve/compile-cache"
    )
    compile_vae: bool | None = Field(
        default=None, description="torch.compile the VAE decoder and encoder; default: when the transformer is"
    )
    compile_text_encoder: bool | None = Field(
        default=None, description="torch.compile the text encoder's layers; default: when the transformer is"
    )
    vae_static_graphs: bool = Field(
        default=True,
        description="with a compiled VAE, decode the warmup_shapes' sizes through graphs compiled for each size "
        "(faster than a dynamic graph) and every other size through one dynamic graph built at warm-up",
    )
    device_jpeg: bool = Field(
        default=False,
        description="encode JPEG responses on the GPU (torchvision's nvJPEG): less serving time, larger files "
        "(4:4:4 chroma)",
    )
    fuse_qkv: bool = Field(default=False, description="fuse Q/K/V projections into one matmul")
    quantization: Literal["none", "fp8"] = Field(
        default="none", description="fp8: dynamic fp8 activations x fp8 weights in the transformer's linears"
    )
    preset: Literal["none", "fast"] = Field(
        default="none",
        description="fast: every speed option that keeps the step count and caches no steps, where this GPU runs "
        "it: quantization fp8 (Ada, Hopper) and attention_backend fa3_fp8 (Hopper with fa3-fwd; not with "
        "context_parallel or the reference-KV pipeline). Keys set explicitly win; the replica logs and describes "
        "what it chose. fp8 rounding changes the image slightly",
    )
    step_cache: Literal["none", "magcache", "taylorseer"] = Field(
        default="none",
        description="diffusers step cache: reuse transformer work across steps (changes the image; magcache needs "
        "mag_ratios, or {calibrate: true} once to log them)",
    )
    step_cache_options: dict[str, Any] = Field(
        default_factory=dict, description="TaylorSeerCacheConfig / MagCacheConfig arguments"
    )
    attention_backend: str | None = Field(
        default=None,
        description="a diffusers attention backend (e.g. _native_cudnn), or fa3 / fa3_fp8: FlashAttention-3's "
        "forward from the fa3-fwd package (Hopper, bf16 transformer; not with context_parallel or the reference-KV "
        "pipeline); fa3_fp8 runs attention in e4m3 and changes the image",
    )
    warmup_shapes: tuple[Shape, ...] = Field(
        default=(Shape(width=1024, height=1024, references=1),),
        description="shape buckets compiled and run before the replica reports ready",
    )
    unwarmed_shapes: Literal["compile", "reject"] = Field(
        default="compile",
        description="a compiled model meeting a shape outside warmup_shapes: compile (once, logged and counted) "
        "or reject (400)",
    )
    default_steps: int | None = Field(default=None, ge=1, description="None: the model family's default")
    default_guidance_scale: float | None = Field(default=None, ge=0.0, description="None: the model family's default")
    default_size: tuple[int, int] = Field(default=(1024, 1024), description="(width, height) of size=auto generations")
    max_batch_size: int = Field(
        default=1, ge=1, le=64, description="text-to-image requests batched into one call (1 = off)"
    )
    batch_wait_timeout_s: float = Field(default=0.01, ge=0.0, description="how long a batch waits to fill")
    vram_policy: Literal["always", "on_pressure", "never"] = Field(
        default="on_pressure",
        description="when to return cached VRAM to the driver after a request: always (the next request "
        "reallocates), on_pressure (reserved over vram_pressure_fraction of the card), never",
    )
    vram_pressure_fraction: float = Field(default=0.9, gt=0.0, le=1.0, description="see vram_policy")
    prompt_cache_mb: int = Field(
        default=256,
        ge=0,
        description="prompt embeddings kept on the model's device, by prompt, least recently used evicted past this "
        "many MiB (0 = off): the same prompt again skips the text encoder, with the same image. One 512-token "
        "prompt takes tokens x joint_attention_dim x 2 bytes in bf16 (dev 15 MiB, klein-4B 7.5 MiB)",
    )
    latent_cache_mb: int = Field(
        default=64,
        ge=0,
        description="VAE latents of reference images kept on the model's device, by a digest of their pixels, least "
        "recently used evicted past this many MiB (0 = off): a reference seen before (an edit of the previous "
        "result) skips its preprocessing and VAE encode, with the same image. A 1024x1024 reference takes 1 MiB "
        "in bf16",
    )
    deployment_options: dict[str, Any] = Field(
        default_factory=dict, description="Ray Serve options for this model's deployment (autoscaling, ...)"
    )
    lora: AdapterSettings = Field(
        default_factory=AdapterSettings, description="LoRA adapters requests can name, and their limits"
    )
    context_parallel: ContextParallel | None = Field(
        default=None, description="split each request's transformer over several GPUs (one replica = degree GPUs)"
    )

    @field_validator("default_size")
    @classmethod
    def _size_on_grid(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not on_grid(*v):
            raise ValueError(f"default_size must be multiples of {SIZE_MULTIPLE}")
        return v

    @model_validator(mode="after")
    def _adapters_need_separate_qkv(self) -> ModelConfig:
        if self.lora.adapters and self.fuse_qkv:
            raise ValueError("fuse_qkv fuses the Q/K/V projections LoRA adapters target: turn one of them off")
        return self

    @property
    def served_name(self) -> str:
        return self.name or self.source

    def with_source_resolved(self, gpu_available: bool) -> ModelConfig:
        """``auto`` made concrete: FLUX.2-klein-4B where it will run on a GPU, else the tiny demo model. The
        served name stays what it was."""
        if self.source != "auto":
            return self
        on_gpu = self.device == "cuda" or (self.device == "auto" and gpu_available)
        return self.model_copy(
            update={"name": self.served_name, "source": AUTO_GPU_SOURCE if on_gpu else AUTO_CPU_SOURCE}
        )

    @property
    def deployment_name(self) -> str:
        """The Serve deployment that runs this model: ``Flux2Model-<name>``."""
        return "Flux2Model-" + re.sub(r"[^A-Za-z0-9_-]+", "-", self.served_name).strip("-")


# What Serve's ``user_config`` of a deployment may change on its running replicas (``reconfigure``), compiled graphs
# and loaded weights kept: the model's own settings that no graph depends on, and the ingress's request limits.
LIVE_MODEL_KEYS = (
    "lora",
    "max_batch_size",
    "batch_wait_timeout_s",
    "unwarmed_shapes",
    "vram_policy",
    "vram_pressure_fraction",
    "prompt_cache_mb",
    "latent_cache_mb",
)
LIVE_SERVICE_KEYS = ("limits", "reference_cache_mb")


class AuthConfig(_Strict):
    """API keys; with none configured the API is open. Health endpoints and the page are always open."""

    api_keys: tuple[str, ...] = Field(default=(), description="accepted keys (Authorization: Bearer <key>)")
    api_keys_env: str | None = Field(default="FLUX2_API_KEYS", description="env var with comma-separated keys")
    api_keys_file: str | None = Field(default=None, description="file with one key a line (a mounted secret)")


class ServiceConfig(_Strict):
    """The whole service: the models to serve and the limits every request is held to."""

    models: tuple[ModelConfig, ...] = Field(default=(ModelConfig(),), description="the first is the default model")
    limits: Limits = Field(default=Limits(), description="what a request may ask for")
    auth: AuthConfig = Field(default=AuthConfig(), description="API keys")
    reference_cache_mb: int = Field(
        default=256,
        ge=0,
        description="decoded reference images each ingress replica keeps, by a digest of the uploaded file, least "
        "recently used evicted past this many MiB of pixels (0 = off): the same file sent again is not decoded "
        "again, nor is a PNG result of this replica sent back as a reference. A 1024x1024 image takes 3 MiB",
    )
    ingress_options: dict[str, Any] = Field(default_factory=dict, description="Ray Serve options for the ingress")

    @model_validator(mode="after")
    def _unique_names(self) -> ServiceConfig:
        names = [m.served_name for m in self.models]
        if not names:
            raise ValueError("at least one model must be configured")
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        return self

    @property
    def default_model(self) -> str:
        return self.models[0].served_name

    def model(self, served_name: str) -> ModelConfig:
        return next(model for model in self.models if model.served_name == served_name)


REFERENCE_SECTIONS = (
    ("args", ServiceConfig),
    ("models[]", ModelConfig),
    ("models[].warmup_shapes[]", Shape),
    ("models[].context_parallel", ContextParallel),
    ("models[].lora", AdapterSettings),
    ("models[].lora.adapters[]", AdapterSpec),
    ("limits", Limits),
    ("auth", AuthConfig),
)


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, tuple) and value and isinstance(value[0], BaseModel):
        return "`" + str([item.model_dump(exclude_defaults=True) for item in value]) + "`"
    return f"`{value!r}`"


def reference_markdown() -> str:
    """The configuration reference, made from the ``Field`` descriptions: they are its one source."""
    lines = [
        "# Configuration reference",
        "",
        "Everything under `args:` in `serve_config.yaml`, validated at start-up. Generated from the `Field`",
        "descriptions in `deployments/config.py` by `python -m deployments.config > docs/configuration.md`.",
        "",
        "A change under `args:` starts new replicas. Some keys may also be given in a deployment's `user_config`",
        "(the Serve config's `deployments:` entries), where a change applies to the running replicas without a",
        "restart, their compiled graphs and loaded weights kept. A key given there replaces the args' value as a",
        "whole; a key left out keeps the args' value.",
        "",
        f"- `ImagesIngress`: {', '.join(f'`{key}`' for key in LIVE_SERVICE_KEYS)}",
        f"- `Flux2Model-<name>`: {', '.join(f'`{key}`' for key in LIVE_MODEL_KEYS)} (`lora` keeps the number and "
        "rank of its slots, `max_per_request` and `max_rank`, and a model started without adapters has none)",
        "",
        "Settings a replica cannot apply fail it when it starts and are logged as an error by a running replica,",
        "which keeps the settings it had.",
    ]
    for section, model in REFERENCE_SECTIONS:
        lines += [
            "",
            f"## `{section}`",
            "",
            (model.__doc__ or "").strip(),
            "",
            "| key | default | meaning |",
            "|---|---|---|",
        ]
        for key, field in model.model_fields.items():
            meaning = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{key}` | {_default(field)} | {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
