"""Speed options applied to a loaded pipeline, all chosen by config: compile, attention backend, cache."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

from deployments.config import ModelConfig

logger = logging.getLogger(__name__)


def default_compile_cache_dir() -> Path:
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return hf_home / "flux2-serve" / "compile-cache"


def configure_compile_cache(directory: str | None) -> Path:
    """Point inductor's on-disk caches at a persistent folder shared by restarts and new replicas.

    Inductor reads these variables when it first needs a cache, so this must run before compiling.
    """
    path = Path(directory) if directory else default_compile_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    return path


def resolve_compile(config: ModelConfig, device: torch.device) -> str:
    """``auto`` compiles the repeated blocks on a GPU and nothing on a CPU."""
    if config.compile == "auto":
        return "regional" if device.type == "cuda" else "none"
    return config.compile


def apply_optimizations(pipeline: DiffusionPipeline, config: ModelConfig, device: torch.device) -> str:
    """Apply attention backend and compilation in place; return the compile mode in effect."""
    transformer = pipeline.transformer
    if config.attention_backend:
        transformer.set_attention_backend(config.attention_backend)
        logger.info("attention backend: %s", config.attention_backend)
    mode = resolve_compile(config, device)
    if mode == "none":
        return mode
    cache = configure_compile_cache(config.compile_cache_dir)
    kwargs = {"fullgraph": True}
    if config.compile_mode:
        kwargs["mode"] = config.compile_mode
    if mode == "regional":
        transformer.compile_repeated_blocks(**kwargs)
    else:
        transformer.compile(**kwargs)
    logger.info("torch.compile %s %s (cache %s); graphs are built during warm-up", mode, kwargs, cache)
    return mode
