"""Where a request goes: its ``model`` and ``lora`` fields resolved, once, into a Route (``types.py``).

An adapter is a model to the OpenAI API (``<model>/<adapter>``) and can be stacked with others through ``lora``;
both resolve against the model's configured adapters into one AdapterStack, which the engine runs as given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from deployments.config import AdapterSettings, ModelConfig
from deployments.errors import InvalidRequest, NotFound
from deployments.openai.protocol import ImageParams
from deployments.types import ADAPTERS_PARAM, AdapterStack, Route


def route(params: ImageParams, models: dict[str, ModelConfig], default: str) -> Route:
    """The model a request names: a served id, or ``<id>/<adapter>``, plus the adapters of its ``lora`` field."""
    name = params.model or default
    adapter = None
    if name not in models:
        base, _, adapter = name.rpartition("/")
        if base not in models or adapter not in {spec.name for spec in models[base].lora.adapters}:
            raise NotFound(
                f"The model '{name}' does not exist. Available: {sorted(model_ids(models))}",
                param="model",
                code="model_not_found",
            )
        name = base
    requested = [(adapter, None)] if adapter else []
    requested += [(ref.name, ref.scale) for ref in params.lora or ()]
    return Route(models[name], resolve_adapters(models[name].lora, requested))


def model_ids(models: dict[str, ModelConfig]) -> list[str]:
    """Every id a request may send: each model, then each of its adapters as ``<model>/<adapter>``."""
    return [
        f"{name}{suffix}" for name, m in models.items() for suffix in ["", *(f"/{a.name}" for a in m.lora.adapters)]
    ]


def resolve_adapters(settings: AdapterSettings, requested: Sequence[tuple[str, float | None]]) -> AdapterStack:
    """The adapters a request named, checked against the model's ``settings``: known names, each once, default
    scales filled in, within ``max_scale`` and ``max_per_request``."""
    if len(requested) > settings.max_per_request:
        raise InvalidRequest(
            f"at most {settings.max_per_request} LoRA adapter(s) per request on this model, got {len(requested)}",
            param=ADAPTERS_PARAM,
            code="too_many_adapters",
        )
    specs = {spec.name: spec for spec in settings.adapters}
    scales: dict[str, float] = {}
    for name, scale in requested:
        spec = specs.get(name)
        if spec is None:
            served = ", ".join(sorted(specs)) or "none"
            raise NotFound(
                f"unknown LoRA adapter {name!r}; this model serves: {served}",
                param=ADAPTERS_PARAM,
                code="adapter_not_found",
            )
        if name in scales:
            raise InvalidRequest(
                f"LoRA adapter {name!r} is named twice", param=ADAPTERS_PARAM, code="duplicate_adapter"
            )
        value = spec.scale if scale is None else float(scale)
        if not math.isfinite(value) or abs(value) > settings.max_scale:
            raise InvalidRequest(
                f"scale {value} of LoRA adapter {name!r} is outside [-{settings.max_scale}, {settings.max_scale}]",
                param=ADAPTERS_PARAM,
                code="invalid_adapter_scale",
            )
        scales[name] = value
    return AdapterStack(tuple(scales.items()))
