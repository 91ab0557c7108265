"""Speed options applied to a loaded pipeline, all chosen by config.

In order: attention backend (a diffusers one, or FA3's processors: ``fa3``, ``fa3_fp8``), fused QKV
projections, fp8 linears (``quantization: fp8``), then ``torch.compile`` (regional: the repeated transformer
blocks; full: the whole transformer; and, by default with it, the VAE and the text encoder's layers) with a
persistent inductor cache so restarted and newly scaled replicas warm from disk.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from diffusers.models.attention_dispatch import AttentionBackendName

from deployments.config import ModelConfig
from deployments.engine.attention import FA3_BACKENDS, fa3_unsupported_reason, use_fa3_attention
from deployments.engine.load import ModelLoadError
from deployments.engine.step_cache import cache_hook_targets
from deployments.engine.vae import compile_decoder

logger = logging.getLogger(__name__)


def default_compile_cache_dir() -> Path:
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return hf_home / "flux2-serve" / "compile-cache"


def configure_compile_cache(directory: str | None) -> Path:
    """Point inductor's on-disk caches at a persistent folder shared by restarts and new replicas.

    The folder holds inductor's FX-graph and AOTAutograd caches, the Triton kernels and dynamo's
    automatic-dynamic profile, so a warm replica skips code generation and kernel compilation
    (dynamo still traces). Inductor reads the variable when it first needs a cache, so this must
    run before compiling; the cache switches are also set on the config modules in case those were
    imported (and read their environment) earlier.
    """
    path = Path(directory).expanduser() if directory else default_compile_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] == "1"
    functorch_config.enable_autograd_cache = os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"] == "1"
    return path


def attention_backend_names() -> list[str]:
    """Every ``attention_backend`` the engine takes: diffusers' backends and FA3's two."""
    return sorted({*FA3_BACKENDS, *(name.value for name in AttentionBackendName)})


def check_supported(config: ModelConfig, device: torch.device) -> None:
    """Fail early, with a clear message, on options this device cannot run."""
    backend = config.attention_backend
    if backend and backend not in attention_backend_names():
        raise ModelLoadError(f"unknown attention_backend {backend!r}; expected one of {attention_backend_names()}")
    if backend in FA3_BACKENDS:
        reason = fa3_unsupported_reason(device)
        if reason:
            raise ModelLoadError(f"attention_backend {backend!r} is configured but cannot run here: {reason}")
    if config.quantization == "fp8":
        from deployments.engine.fp8 import fp8_unsupported_reason

        reason = fp8_unsupported_reason(device)
        if reason:
            raise ModelLoadError(f"quantization 'fp8' is configured but cannot run here: {reason}")
    if config.device_jpeg:
        from deployments.engine.pixels import device_jpeg_unavailable_reason

        reason = device_jpeg_unavailable_reason(device)
        if reason:
            raise ModelLoadError(f"device_jpeg is configured but cannot run here: {reason}")


def resolve_compile(config: ModelConfig, device: torch.device) -> str:
    """``auto`` compiles the repeated blocks on a GPU and nothing on a CPU."""
    if config.compile == "auto":
        return "regional" if device.type == "cuda" else "none"
    return config.compile


def compiled_parts(config: ModelConfig, transformer: str) -> tuple[bool, bool]:
    """Whether the VAE and the text encoder are compiled: as configured, else as the transformer is (``transformer``:
    its resolved mode). The VAE's decode at 1024² went from 89 to 37 ms for klein on an H200."""
    follows = transformer != "none"
    return (
        follows if config.compile_vae is None else config.compile_vae,
        follows if config.compile_text_encoder is None else config.compile_text_encoder,
    )


def apply_optimizations(pipeline: DiffusionPipeline, config: ModelConfig, device: torch.device) -> str:
    """Apply attention backend, fused QKV, fp8 and compilation in place; return what it compiled of the
    transformer: none, regional or full (``config.compile`` resolved)."""
    check_supported(config, device)
    transformer = pipeline.transformer
    if config.attention_backend in FA3_BACKENDS:
        count = use_fa3_attention(pipeline, fp8=config.attention_backend == "fa3_fp8")
        logger.info("attention: FA3 %s on %d attention modules", config.attention_backend, count)
    elif config.attention_backend:
        transformer.set_attention_backend(config.attention_backend)
        logger.info("attention backend: %s", config.attention_backend)
    if config.fuse_qkv:
        transformer.fuse_qkv_projections()  # double-stream blocks; single-stream ones are fused already
        logger.info("fused QKV projections")
    if config.quantization == "fp8":
        from deployments.engine.fp8 import quantize_transformer_fp8

        swapped = quantize_transformer_fp8(transformer)
        logger.info("fp8: %d linear layers of the transformer blocks now run e4m3 x e4m3 (_scaled_mm)", swapped)
    compiled = resolve_compile(config, device)
    compile_vae, compile_text_encoder = compiled_parts(config, compiled)
    if compiled == "none" and not (compile_vae or compile_text_encoder):
        return compiled
    cache = configure_compile_cache(config.compile_cache_dir)
    # compile_mode is the transformer's. The VAE and the text encoder keep inductor's default: CUDA-graph
    # modes break the text encoder (a graph-broken layer reads the previous layer's graph output after
    # the next replay overwrote it), and max-autotune on the VAE's 1024² convolutions ran past 10 minutes.
    kwargs = {"fullgraph": True}
    block_kwargs = {**kwargs, "mode": config.compile_mode} if config.compile_mode else kwargs
    regions = layers = 0
    if compiled == "regional":
        regions = compile_blocks(transformer, block_kwargs, cache_hook_targets(transformer, config))
    elif compiled == "full":
        transformer.compile(**block_kwargs)
    if compile_vae:
        # The decoder: static graphs for the warmed output sizes, a dynamic one for the rest (vae.py says why).
        # The encoder reads reference images of any size: dynamic from the start, so none recompiles it.
        sizes = [(shape.width, shape.height) for shape in config.warmup_shapes] if config.vae_static_graphs else []
        compile_decoder(pipeline.vae, sizes, kwargs)
        pipeline.vae.encoder.compile(**kwargs, dynamic=True)
    if compile_text_encoder:
        # transformers' output-capturing hooks read a ContextVar, which dynamo cannot trace: allow breaks.
        layers = compile_decoder_layers(pipeline.text_encoder, {**kwargs, "fullgraph": False})
    logger.info(
        "torch.compile transformer=%s (%d regions, %s) vae=%s text_encoder=%s (%d layers) (cache %s); "
        "graphs are built during warm-up",
        compiled,
        regions,
        block_kwargs,
        compile_vae,
        compile_text_encoder,
        layers,
        cache,
    )
    return compiled


def compile_blocks(transformer: torch.nn.Module, kwargs: dict, hooked: set[torch.nn.Module]) -> int:
    """Regional compile: the ``forward`` of each repeated block (``_repeated_blocks``) is compiled in place;
    identical blocks share one graph. Returns how many regions were compiled.

    Step-cache hooks (TaylorSeer, MagCache: ``hooked``) wrap a module's ``forward`` from outside with
    per-step Python state that dynamo cannot trace, so no compiled region may contain one. Compiling the
    method (not the module's whole call, as diffusers' ``compile_repeated_blocks`` does) lets a hook on
    the block itself stay outside and call the compiled block; where the hooks sit inside a block
    (TaylorSeer's attention modules), those modules are compiled instead and the rest of the block
    stays eager.
    """
    names = set(transformer._repeated_blocks)
    regions = []
    for block in transformer.modules():
        if type(block).__name__ in names:
            inner = [module for module in block.modules() if module in hooked and module is not block]
            regions.extend(inner or [block])
    for module in regions:
        module.forward = torch.compile(module.forward, **kwargs)
    return len(regions)


def compile_decoder_layers(text_encoder: torch.nn.Module, kwargs: dict) -> int:
    """Regional compile of a transformers model: each decoder layer (the classes its ``_no_split_modules``
    names) is compiled in place; identical layers share one graph."""
    layer_classes = set(getattr(text_encoder, "_no_split_modules", None) or ())
    layers = [module for module in text_encoder.modules() if type(module).__name__ in layer_classes]
    if not layers:
        raise ModelLoadError(f"compile_text_encoder: {type(text_encoder).__name__} names no decoder layer classes")
    for layer in layers:
        layer.compile(**kwargs)
    return len(layers)
