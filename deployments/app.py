"""Application builder: ``serve run serve_config.yaml`` calls ``build_app(args)``.

One ``Flux2Model`` deployment per configured model, named ``Flux2Model-<name>``, and one
``ImagesIngress`` in front of them. Deployment options come from each model's
``deployment_options`` (or the Serve config's ``deployments:`` overrides, which win).
"""

from __future__ import annotations

from typing import Any

import ray
from ray import serve

from deployments.config import TINY_SOURCES, ModelConfig, ServiceConfig
from deployments.ingress import ImagesIngress
from deployments.model import Flux2Model


def deployment_name(model: ModelConfig) -> str:
    return model.deployment_name


def wants_gpu(model: ModelConfig) -> bool:
    """Tiny and CPU models need no GPU; ``auto`` takes one when the cluster has any."""
    if model.source in TINY_SOURCES or model.device == "cpu":
        return False
    if model.source == "auto" and model.device == "auto":
        return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) >= 1
    return True


def model_options(model: ModelConfig) -> dict[str, Any]:
    options: dict[str, Any] = {"name": deployment_name(model)}
    actor_options = {"num_gpus": 1, "num_cpus": 2} if wants_gpu(model) else {"num_gpus": 0, "num_cpus": 0.5}
    options.update(model.deployment_options)
    options["ray_actor_options"] = {**actor_options, **model.deployment_options.get("ray_actor_options", {})}
    return options


def bind_model(model: ModelConfig) -> serve.Application:
    """A 1-GPU-per-replica deployment, or a context-parallel one spanning ``context_parallel.degree`` GPUs."""
    if model.context_parallel is not None:
        from deployments.parallel_model import ContextParallelFlux2Model, context_parallel_options

        deployment = ContextParallelFlux2Model.options(**context_parallel_options(model))
    else:
        deployment = Flux2Model.options(**model_options(model))
    return deployment.bind(model.model_dump(mode="json"))


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    config = ServiceConfig.model_validate(args or {})
    handles = {model.served_name: bind_model(model) for model in config.models}
    ingress = ImagesIngress.options(**config.ingress_options) if config.ingress_options else ImagesIngress
    return ingress.bind(handles, config.model_dump(mode="json"))
