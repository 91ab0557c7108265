"""Ray-free FLUX.2 engine: load, optimise, warm up and run a diffusers pipeline."""

from deployments.engine.flux2_engine import Flux2Engine
from deployments.engine.load import ModelLoadError
from deployments.engine.warmup import warm_up

__all__ = ["Flux2Engine", "ModelLoadError", "warm_up"]
