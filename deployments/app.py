"""Application builder: ``serve run serve_config.yaml`` calls ``build_app(args)``.

One model deployment per configured model, named ``Flux2Model-<name>``, and one ``ImagesIngress`` in
front of them. Each server class computes its own Serve options; a Serve config's ``deployments:``
entries override them. The typed config is validated once, here, and handed to every deployment.
"""

from __future__ import annotations

from typing import Any

import ray
from ray import serve

from deployments.config import ModelConfig, ServiceConfig
from deployments.cp_server import ContextParallelFlux2Model
from deployments.ingress import ImagesIngress
from deployments.server import Flux2Model


def bind_model(model: ModelConfig) -> serve.Application:
    """A 1-GPU-per-replica deployment, or a context-parallel one spanning ``context_parallel.degree`` GPUs."""
    server = Flux2Model if model.context_parallel is None else ContextParallelFlux2Model
    return serve.deployment(server).options(**server.deployment_options(model)).bind(model)


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    config = ServiceConfig.model_validate(args or {})
    # ``auto`` is decided once, here, so the ingress's listing and the replicas agree on what is served.
    has_gpu = ray.is_initialized() and ray.cluster_resources().get("GPU", 0) >= 1
    config = config.model_copy(update={"models": tuple(m.with_source_resolved(has_gpu) for m in config.models)})
    handles = {model.served_name: bind_model(model) for model in config.models}
    ingress = serve.deployment(ImagesIngress).options(**ImagesIngress.deployment_options(config))
    return ingress.bind(handles, config)
