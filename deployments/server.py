"""The FLUX.2 model deployment: one engine per replica, GPU work only.

The constructor loads, compiles and warms the engine, so a replica reports ready only when no
user request will pay for compilation. All engine work runs on ONE dedicated thread (compile,
warm-up and inference share it, as CUDA graph trees require), which also serialises requests on
the GPU while the replica's event loop stays free for health checks and metadata calls.

Where the engine runs is the server's :class:`EngineHost`: this replica's own device by default; the
context-parallel server (``cp_server.py``) gives it a group of GPUs instead and keeps the rest of this server.

The engine's modules (torch, diffusers: seconds of imports) are imported where the replica first uses them, not
with this module: building the app (``deployments.app``, which every ``serve deploy`` runs) only needs this class
and its Serve options.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from ray import serve

from deployments.config import LIVE_MODEL_KEYS, TINY_SOURCES, ModelConfig
from deployments.errors import Unavailable
from deployments.metrics import ModelMetrics
from deployments.types import ImageRequest, ImageResult, StreamEvent

if TYPE_CHECKING:
    from deployments.engine import Flux2Engine
    from deployments.engine.progress import StepReporter

logger = logging.getLogger("ray.serve")

# Adapter stacks a replica reports to Serve's router for affinity (fixed when the class is defined).
MULTIPLEXED_ADAPTER_STACKS = 16
# A request still running after this many seconds means the engine thread is stuck.
WEDGED_AFTER_S = 1800.0


# One request on the GPU and one ready behind it; a bounded queue; draining outlasts the longest
# allowed generation (limits.request_timeout_s, 600 s by default).
SERVE_DEFAULTS = {
    "max_ongoing_requests": 2,
    "max_queued_requests": 64,
    "graceful_shutdown_timeout_s": 660,
    "health_check_period_s": 10,
    "health_check_timeout_s": 30,
}


def live_settings(model: ModelConfig) -> dict[str, Any]:
    """The keys of ``model`` that ``reconfigure`` can change, as Serve's ``user_config`` carries them."""
    return model.model_dump(include=set(LIVE_MODEL_KEYS), mode="json")


def wants_gpu(model: ModelConfig) -> bool:
    """Every model takes a GPU but the tiny ones and those configured for the CPU (``auto`` is resolved by now)."""
    return model.source not in TINY_SOURCES and model.device != "cpu"


class EngineHost(Protocol):
    """Where a replica's engine runs: what the model server asks of it beside the engine itself."""

    def start(self, config: ModelConfig) -> Flux2Engine:
        """Load and warm up the engine; called once, on the engine thread."""

    def broken(self) -> str | None:
        """Why the engine can run no more requests, beyond what the server sees itself; None while it can."""

    async def check_health(self) -> None:
        """Raise when a part of the engine outside this process does not answer."""


class OneDevice:
    """The engine on this replica's own device: one GPU, or the CPU."""

    def start(self, config: ModelConfig) -> Flux2Engine:
        from deployments.engine import Flux2Engine, warm_up

        engine = Flux2Engine.from_config(config)
        times = warm_up(engine)
        info = engine.info
        label = " [DEMO: random weights, images are noise]" if info.is_demo else ""
        logger.info(
            "model %s ready%s: source=%s load=%.1fs warm-up=%.1fs %s",
            info.name,
            label,
            info.source,
            info.load_s,
            info.warmup_s,
            times,
        )
        return engine

    def broken(self) -> str | None:
        return None  # a sticky device error is seen by the server, which ran the request

    async def check_health(self) -> None:
        return None  # nothing outside this process


class Flux2Model:
    """Serves one FLUX.2 model; ``generate`` takes a validated ImageRequest and returns uint8 images."""

    @staticmethod
    def deployment_options(model: ModelConfig) -> dict[str, Any]:
        """Serve options of this model's deployment: one GPU a replica (none for tiny or CPU models), then
        the model's ``deployment_options``; a Serve config's ``deployments:`` entry overrides both."""
        actor_options = {"num_gpus": 1, "num_cpus": 2} if wants_gpu(model) else {"num_gpus": 0, "num_cpus": 0.5}
        options: dict[str, Any] = {
            "name": model.deployment_name,
            **SERVE_DEFAULTS,
            "user_config": live_settings(model),  # a Serve config's user_config replaces it: see reconfigure
            **model.deployment_options,
        }
        options["ray_actor_options"] = {**actor_options, **model.deployment_options.get("ray_actor_options", {})}
        return options

    def __init__(self, model_config: ModelConfig, host: EngineHost | None = None):
        self.base_config = model_config  # what args say; reconfigure applies user_config over it
        self.config = model_config
        self.host = host if host is not None else OneDevice()
        self._reconfigured = False  # the first reconfigure comes right after the constructor
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flux2-engine")
        self._busy_since: float | None = None
        self._broken: str | None = None
        self.engine: Flux2Engine = self._thread.submit(self.host.start, self.config).result()
        self._generate_batched.set_max_batch_size(self.config.max_batch_size)
        self._generate_batched.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)
        self.metrics = ModelMetrics(self.config.served_name, self.engine.conditioning.stats)

    @serve.multiplexed(max_num_models_per_replica=MULTIPLEXED_ADAPTER_STACKS)
    async def _hold_adapters(self, adapters_id: str) -> str:
        """Routing affinity only: reporting a request's adapters (``AdapterStack.id``) to Serve's router sends the
        next requests with them to replicas that hold them; the weights themselves are loaded on the engine thread,
        bounded by ``lora.max_loaded``."""
        return adapters_id

    async def generate(self, request: ImageRequest) -> ImageResult:
        from deployments.engine.progress import StepReporter

        self._check_usable()
        if request.adapters:
            await self._hold_adapters(serve.get_multiplexed_model_id())
        if self.config.max_batch_size > 1 and request.batch_key is not None:
            return await self._generate_batched(request)
        return await self._submit(request, StepReporter())

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _generate_batched(self, requests: list[ImageRequest]) -> list[ImageResult]:
        """Text-to-image requests arriving together: those with the same batch key share a pipeline call."""
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(request.batch_key, []).append(index)
        results: list[ImageResult | None] = [None] * len(requests)
        loop = asyncio.get_running_loop()
        for indices in groups.values():
            group = [requests[i] for i in indices]
            queued_at = time.perf_counter()
            for index, result in zip(
                indices, await loop.run_in_executor(self._thread, self._run_batch, group, queued_at), strict=True
            ):
                results[index] = result
        return results

    async def generate_stream(self, request: ImageRequest, partial_images: int = 0) -> AsyncIterator[StreamEvent]:
        """Yield progress after every step, ``partial_images`` previews, then the ImageResult.

        When the client goes away Serve cancels this generator; the run then stops after the current step.
        """
        from deployments.engine.progress import StepReporter

        self._check_usable()
        if request.adapters:
            await self._hold_adapters(serve.get_multiplexed_model_id())
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        reporter = StepReporter(
            emit=lambda event: loop.call_soon_threadsafe(events.put_nowait, event), partial_images=partial_images
        )
        run = asyncio.ensure_future(self._submit(request, reporter))
        try:
            # Events are queued on the loop before the run's completion, so none is lost at the end.
            while not run.done() or not events.empty():
                next_event = asyncio.ensure_future(events.get())
                await asyncio.wait({next_event, run}, return_when=asyncio.FIRST_COMPLETED)
                if next_event.done():
                    yield next_event.result()
                else:
                    next_event.cancel()
            yield run.result()
        finally:
            reporter.cancel.set()
            run.cancel()

    def _check_usable(self) -> None:
        if broken := self._broken or self.host.broken():
            raise Unavailable(f"model replica is unhealthy: {broken}", retry_after_s=10, code="replica_unhealthy")

    async def _submit(self, request: ImageRequest, reporter: StepReporter) -> ImageResult:
        queued_at = time.perf_counter()
        future = asyncio.get_running_loop().run_in_executor(self._thread, self._run, request, queued_at, reporter)
        try:
            return await future
        except asyncio.CancelledError:
            reporter.cancel.set()  # the caller is gone: stop at the next step boundary, or never start
            raise

    def _run(self, request: ImageRequest, queued_at: float, reporter: StepReporter) -> ImageResult:
        reporter.raise_if_cancelled()  # the client left while the request queued for the engine thread
        return self._run_batch([request], queued_at, reporter)[0]

    def _run_batch(
        self, requests: list[ImageRequest], queued_at: float, reporter: StepReporter | None = None
    ) -> list[ImageResult]:
        from deployments.engine.progress import GenerationCancelled

        self._busy_since = time.monotonic()
        compiles, ooms = self.engine.unwarmed_compiles, self.engine.memory.oom_recoveries
        adapters = dataclasses.replace(self.engine.adapters.stats)
        try:
            results = self.engine.generate_batch(requests, reporter)
        except GenerationCancelled:
            logger.info("request cancelled by its client; engine freed")
            raise
        except Exception as exc:
            self.metrics.failures.inc(tags=self.metrics.tags)
            if isinstance(exc, RuntimeError) and "CUDA error" in str(exc):
                self._broken = str(exc).splitlines()[0]  # sticky device errors leave the context unusable
            raise
        finally:
            self._busy_since = None
            self.metrics.observe_adapters(adapters, self.engine.adapters.stats, len(self.engine.adapters.resident))
            self.metrics.observe_caches(self.engine.conditioning.stats)
        timings = results[0].timings
        replica_queue_s = time.perf_counter() - queued_at - timings.generate_s - timings.output_s
        self.metrics.observe(
            timings, replica_queue_s, self.engine.unwarmed_compiles - compiles, self.engine.memory.oom_recoveries - ooms
        )
        return results

    async def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Serve's ``user_config``: the live keys of the model's config (``LIVE_MODEL_KEYS``: adapters and their
        bounds, batching, VRAM policy) applied to this replica, its weights and compiled graphs kept. Keys it leaves
        out take the args' values. Serve calls this after the constructor and on every ``serve deploy`` that changes
        only ``user_config``. Settings it cannot apply fail a starting replica (Serve reports the deploy failed);
        a running replica logs them as an error and keeps serving with what it has, as Serve would otherwise
        replace it with one that fails to start."""
        try:
            config = self.base_config.reconfigured(user_config, LIVE_MODEL_KEYS)
            await asyncio.get_running_loop().run_in_executor(self._thread, self.engine.reconfigure, config)
        except ValueError as exc:
            if not self._reconfigured:
                raise
            logger.error("model %s: user_config not applied, settings kept: %s", self.config.served_name, exc)
            return
        self._generate_batched.set_max_batch_size(config.max_batch_size)
        self._generate_batched.set_batch_wait_timeout_s(config.batch_wait_timeout_s)
        self.config, self._reconfigured = config, True
        logger.info("model %s reconfigured: %s", config.served_name, live_settings(config))

    async def describe(self) -> dict[str, Any]:
        """The engine's details and the live settings in force: the ingress routes adapters by these."""
        return {**self.engine.info.as_dict(), "settings": live_settings(self.config)}

    async def check_health(self) -> None:
        """Async on purpose: a sync check would wait behind a long generation and get the replica killed."""
        if broken := self._broken or self.host.broken():
            raise RuntimeError(f"engine broken: {broken}")
        self.engine.memory.check_device()
        busy_since = self._busy_since
        if busy_since is not None and time.monotonic() - busy_since > WEDGED_AFTER_S:
            raise RuntimeError(f"engine thread busy for over {WEDGED_AFTER_S:.0f}s: wedged")
        await self.host.check_health()
