"""The engine: a loaded, optimised, warmed FLUX.2 pipeline that turns an ImageRequest into images.

Plain Python, no Ray: ``Flux2Engine.from_config(cfg).generate(request)`` works in a notebook.
Calls are not thread-safe; the caller runs them on one thread (the model deployment does).
"""

from __future__ import annotations

import inspect
import logging
import time

import numpy as np
import torch

from deployments.config import ModelConfig
from deployments.engine.adapters import AdapterManager
from deployments.engine.conditioning import Conditioning
from deployments.engine.load import LoadedPipeline, load_pipeline, resolve_device
from deployments.engine.masking import run_masked_edit
from deployments.engine.memory import MemoryManager, configure_allocator
from deployments.engine.optimize import apply_optimizations, check_supported, compiled_parts
from deployments.engine.pipeline_call import call_pipeline, seed_generators
from deployments.engine.pixels import encode_jpegs, host_pixels, to_uint8_tensor
from deployments.engine.preset import resolve_preset
from deployments.engine.progress import StepReporter
from deployments.engine.step_cache import StepCache
from deployments.errors import InvalidRequest
from deployments.types import EncodedImage, ImageRequest, ImageResult, ModelInfo, Timings

logger = logging.getLogger(__name__)

# Defaults of the model families: dev embeds guidance (one pass a step); distilled klein needs no CFG.
FAMILY_DEFAULTS = {"dev": (50, 4.0), "klein": (4, 1.0), "klein-base": (50, 4.0)}
TINY_DEFAULT_STEPS = 4


class Flux2Engine:
    """Runs requests on one FLUX.2 pipeline."""

    def __init__(
        self,
        loaded: LoadedPipeline,
        config: ModelConfig,
        *,
        compile: str = "none",
        load_s: float = 0.0,
        adapters: AdapterManager | None = None,
    ):
        """``compile`` is what ``apply_optimizations`` compiled: none, regional or full (``config.compile``
        resolved; ``config.compile_mode`` is torch's mode for it). ``adapters`` must have been made before fp8 and
        compilation; by default a manager is made here, which is right only for a model without adapters (or one
        not yet optimised)."""
        self.pipeline = loaded.pipeline
        self.loaded = loaded
        self.config = config
        self.adapters = adapters if adapters is not None else AdapterManager(loaded.pipeline, config.lora)
        self.conditioning = Conditioning(loaded.pipeline, config.prompt_cache_mb, config.latent_cache_mb)
        # Cached embeddings and latents are the first device memory an out-of-memory error gives back.
        self.memory = MemoryManager(
            loaded.device, config.vram_policy, config.vram_pressure_fraction, on_oom=self.conditioning.clear
        )
        self.compile = compile
        self.load_s = load_s
        self.warmup_s = 0.0
        self.warm_shapes: set[tuple[int, int, int]] = set()
        self.unwarmed_compiles = 0
        family_key = loaded.family
        if family_key == "klein" and not getattr(self.pipeline.config, "is_distilled", True):
            family_key = "klein-base"
        steps, guidance = FAMILY_DEFAULTS[family_key]
        if loaded.weights == "random-tiny":
            steps = TINY_DEFAULT_STEPS
        self.default_steps = config.default_steps or steps
        self.default_guidance_scale = (
            config.default_guidance_scale if config.default_guidance_scale is not None else guidance
        )
        # The reference-KV pipeline takes no guidance_scale (distilled klein ignores it anyway).
        self.takes_guidance = "guidance_scale" in inspect.signature(type(self.pipeline).__call__).parameters
        self.step_cache = StepCache(self.pipeline, loaded.family, config, self.default_steps)

    def reconfigure(self, config: ModelConfig) -> None:
        """Run with ``config``'s live keys (``LIVE_MODEL_KEYS``) from the next request on; what the pipeline was
        loaded, optimised and compiled with stays. Call it on the engine's thread."""
        self.adapters.reconfigure(config.lora)
        self.memory.policy, self.memory.pressure_fraction = config.vram_policy, config.vram_pressure_fraction
        self.conditioning.resize(config.prompt_cache_mb, config.latent_cache_mb)
        self.config = config

    @classmethod
    def from_config(cls, config: ModelConfig) -> Flux2Engine:
        """Load and optimise (no warm-up: see :func:`deployments.engine.warmup.warm_up`)."""
        configure_allocator()
        check_supported(config, resolve_device(config))  # fail before loading gigabytes, not after
        start = time.perf_counter()
        loaded = load_pipeline(config)
        config = resolve_preset(config, loaded)
        adapters = AdapterManager(loaded.pipeline, config.lora)  # its LoRA slots go in before fp8 and compile
        compiled = apply_optimizations(loaded.pipeline, config, loaded.device)
        load_s = time.perf_counter() - start
        logger.info(
            "%s ready to warm up in %.2fs (%s, %s, %s)",
            loaded.source,
            load_s,
            loaded.family,
            loaded.device,
            loaded.dtype,
        )
        return cls(loaded, config, compile=compiled, load_s=load_s, adapters=adapters)

    @property
    def compiles_anything(self) -> bool:
        """Whether any part of the pipeline is compiled: only then do warm-up's further runs prepare anything."""
        return self.compile != "none" or any(compiled_parts(self.config, self.compile))

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.config.served_name,
            source=self.loaded.source,
            family=self.loaded.family,
            weights=self.loaded.weights,
            device=str(self.loaded.device),
            dtype=str(self.loaded.dtype).removeprefix("torch."),
            default_steps=self.default_steps,
            default_guidance_scale=self.default_guidance_scale,
            compile=self.compile,
            quantization=self.config.quantization,
            attention_backend=self.config.attention_backend or "default",
            device_jpeg=self.config.device_jpeg,
            adapters=tuple(spec.name for spec in self.config.lora.adapters),
            warmup_s=round(self.warmup_s, 3),
            load_s=round(self.load_s, 3),
        )

    def generate(self, request: ImageRequest, reporter: StepReporter | None = None) -> ImageResult:
        """Run one request; OOM is retried once, then answered with a retryable error.

        ``reporter`` receives each step (progress, previews) and can cancel the run between steps.
        """
        return self.generate_batch([request], reporter)[0]

    def generate_batch(self, requests: list[ImageRequest], reporter: StepReporter | None = None) -> list[ImageResult]:
        """Run requests in ONE pipeline call: one request, or text-to-image requests sharing a batch key."""
        first = requests[0]
        if len(requests) > 1 and any(r.batch_key is None or r.batch_key != first.batch_key for r in requests):
            raise ValueError("only text-to-image requests with the same batch_key can share a pipeline call")
        for request in requests:
            self._check_shape(request)
        steps = first.num_inference_steps or self.default_steps
        guidance = first.guidance_scale if first.guidance_scale is not None else self.default_guidance_scale
        started_at = time.time()
        adapter_s = self.adapters.activate(first.adapters)  # the same adapters for every request of a batch
        self.memory.reset_peak()
        start = time.perf_counter()
        try:
            with self.step_cache.scope(first.step_cache) as cached:
                pixels = self.memory.run(lambda: self._run_pipeline(requests, steps, guidance, reporter))
            if pixels.is_cuda:
                torch.cuda.synchronize(pixels.device)
            generate_s = time.perf_counter() - start
            per_request = self._outputs(pixels, requests)
        finally:
            self.memory.after_request()
        output_s = time.perf_counter() - start - generate_s
        self.warm_shapes.update(request.shape_key for request in requests)
        timings = Timings(
            started_at=started_at,
            generate_s=generate_s,
            output_s=output_s,
            step_s=generate_s / steps,
            peak_vram_gb=self.memory.peak_bytes() / 2**30,
            batch_size=len(requests),
            adapter_s=adapter_s,
        )
        results = []
        for request, images in zip(requests, per_request, strict=True):
            results.append(
                ImageResult(
                    images=images,
                    seed=request.seed,
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    weights=self.loaded.weights,
                    timings=timings,
                    mask_applied=request.mask is not None,
                    step_cache=cached,
                )
            )
        return results

    def _outputs(self, pixels: torch.Tensor, requests: list[ImageRequest]) -> list[list[np.ndarray | EncodedImage]]:
        """Each request's images off the device: JPEG files encoded on the GPU when it asked for JPEG
        and this engine can, else uint8 arrays."""
        outputs, offset = [], 0
        for request in requests:
            chunk = pixels[offset : offset + request.n]
            offset += request.n
            if request.jpeg_quality is not None and self.config.device_jpeg:  # checked at load: it runs here
                files = encode_jpegs(chunk, request.jpeg_quality)
                outputs.append([EncodedImage(data, "jpeg", request.width, request.height) for data in files])
            else:
                outputs.append(list(host_pixels(chunk)))
        return outputs

    def _check_shape(self, request: ImageRequest) -> None:
        if self.compile == "none" or request.shape_key in self.warm_shapes or not self.warm_shapes:
            return
        if self.config.unwarmed_shapes == "reject":
            width, height, refs = request.shape_key
            raise InvalidRequest(
                f"size {width}x{height} with {refs} reference image(s) is not among this model's warmed "
                "shapes; ask for a configured size",
                param="size",
                code="shape_not_warmed",
            )
        self.unwarmed_compiles += 1
        logger.warning("shape %s was not warmed up: this request may compile", request.shape_key)

    def _run_pipeline(
        self, requests: list[ImageRequest], steps: int, guidance: float, reporter: StepReporter | None = None
    ) -> torch.Tensor:
        """All requested images as one (N, 3, H, W) uint8 tensor on the pipeline's device."""
        request = requests[0]
        if reporter is not None:
            reporter.start(steps, request.width, request.height)
        guidance_or_none = guidance if self.takes_guidance else None
        if request.mask is not None:  # latent-space masked denoising + feathered composite
            images = run_masked_edit(
                self.pipeline, request, steps, guidance_or_none, self.conditioning, step_callback=reporter
            )
        else:
            generators = seed_generators(requests)
            keys = self.conditioning.reference_keys(request.images)
            images = call_pipeline(
                self.pipeline,
                requests,
                steps,
                guidance_or_none,
                generators,
                self.conditioning,
                reference_keys=keys,
                callback=reporter,
            )
        return to_uint8_tensor(images)
