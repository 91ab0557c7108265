"""Build a FLUX.2 pipeline from a model source: tiny, random full-size, a hub id or a local folder.

A configured source is loaded exactly as named or fails with :class:`ModelLoadError`; only
``auto`` chooses, and it says what it chose.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, Flux2KleinKVPipeline, Flux2KleinPipeline, Flux2Pipeline

from deployments.config import RANDOM_SOURCES, TINY_SOURCES, ModelConfig, weights_label
from deployments.engine.text_encoder import trim_text_encoder

logger = logging.getLogger(__name__)

PIPELINE_FAMILIES = {"Flux2Pipeline": "dev", "Flux2KleinPipeline": "klein", "Flux2KleinKVPipeline": "klein"}


class ModelLoadError(RuntimeError):
    """The configured model cannot be loaded; the replica must not start."""


@dataclass
class LoadedPipeline:
    pipeline: DiffusionPipeline
    source: str  # the resolved source (``auto`` replaced)
    family: str  # "dev" | "klein"
    weights: str  # "pretrained" | "random-tiny" | "random-full"
    device: torch.device
    dtype: torch.dtype


def resolve_device(config: ModelConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' is configured but no CUDA GPU is visible")
    return torch.device(config.device)


def resolve_dtype(config: ModelConfig, device: torch.device) -> torch.dtype:
    if config.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, config.dtype)


def resolve_source(config: ModelConfig, device: torch.device) -> str:
    if config.source != "auto":
        return config.source
    chosen = config.with_source_resolved(gpu_available=device.type == "cuda").source
    if chosen in TINY_SOURCES:
        logger.warning(
            "model source 'auto' on a machine without a GPU: serving the TINY RANDOM demo model "
            "'%s'; its images are noise",
            chosen,
        )
    else:
        logger.info("model source 'auto' resolved to %s", chosen)
    return chosen


def family_of(pipeline: DiffusionPipeline) -> str:
    name = type(pipeline).__name__
    if name not in PIPELINE_FAMILIES:
        raise ModelLoadError(f"{name} is not a FLUX.2 pipeline (expected one of {sorted(PIPELINE_FAMILIES)})")
    return PIPELINE_FAMILIES[name]


def load_pipeline(config: ModelConfig) -> LoadedPipeline:
    """Load (or build) the pipeline named by ``config.source`` onto its device."""
    device = resolve_device(config)
    dtype = resolve_dtype(config, device)
    source = resolve_source(config, device)
    if source in TINY_SOURCES:
        from deployments.engine.synthetic.tiny import TINY_BUILDERS

        pipeline = TINY_BUILDERS[source]()
        logger.warning("loaded %s: a TINY RANDOMLY INITIALISED pipeline for tests and demos", source)
    elif source in RANDOM_SOURCES:
        from deployments.engine.synthetic.random_weights import build_random_pipeline

        pipeline = build_random_pipeline(source, device=device, dtype=dtype)
        logger.warning("loaded %s: full-size architecture with RANDOM weights (benchmarks only)", source)
    else:
        pipeline = _from_pretrained(source, config.revision, dtype)
    for component in pipeline.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()  # freshly built modules start in training mode
    trim_text_encoder(pipeline)  # before moving: what nobody reads never reaches the device
    pipeline.to(device)
    if pipeline.transformer.dtype != dtype:  # built in float32: tiny and random sources
        pipeline.to(dtype=dtype)
    pipeline.set_progress_bar_config(disable=True)
    return LoadedPipeline(pipeline, source, family_of(pipeline), weights_label(source), device, dtype)


def read_pipeline_class(source: str, revision: str | None = None) -> str:
    """The ``_class_name`` in a local folder's or hub repo's ``model_index.json``."""
    path = Path(source)
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise ModelLoadError(f"{source} is a folder without model_index.json (save it with save_pretrained)")
    elif path.exists() or source.startswith((".", "/", "~")):
        raise ModelLoadError(f"model folder {source} does not exist or is not a folder")
    else:
        from huggingface_hub import hf_hub_download

        try:
            index = Path(hf_hub_download(source, "model_index.json", revision=revision))
        except Exception as exc:  # offline, unknown repo, gated repo without a token, ...
            raise ModelLoadError(f"cannot fetch model_index.json of hub model {source!r}: {exc}") from exc
    return json.loads(index.read_text())["_class_name"]


def _from_pretrained(source: str, revision: str | None, dtype: torch.dtype) -> DiffusionPipeline:
    class_name = read_pipeline_class(source, revision)
    pipeline_cls = {
        "Flux2Pipeline": Flux2Pipeline,
        "Flux2KleinPipeline": Flux2KleinPipeline,
        "Flux2KleinKVPipeline": Flux2KleinKVPipeline,
    }.get(class_name)
    if pipeline_cls is None:
        raise ModelLoadError(f"{source} holds a {class_name}, not a FLUX.2 pipeline")
    logger.info("loading %s (%s) from %s", class_name, dtype, source)
    try:
        return pipeline_cls.from_pretrained(source, revision=revision, dtype=dtype)
    except Exception as exc:
        raise ModelLoadError(f"failed to load {class_name} from {source!r}: {exc}") from exc
