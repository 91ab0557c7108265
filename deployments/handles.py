"""The model deployments as the ingress reaches them: through their Serve handles, and by what they say of
themselves.

A call goes to a replica that holds its adapters (Serve's multiplexing) and must finish within
``limits.request_timeout_s``. A model with no running replica is answered 503 at once (after
``limits.no_replica_wait_s``), before the call and while it waits, instead of being held until a replacement
is warm. What Ray raises becomes the service's errors, and a run nobody waits for any more is cancelled, so
its replica stops at the next step. Each model's live settings and details are asked for in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Iterator
from contextlib import contextmanager
from typing import Any

from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from deployments.config import LIVE_MODEL_KEYS, Limits, ModelConfig
from deployments.errors import DeadlineExceeded, Flux2Error, GenerationFailed, Overloaded, Unavailable
from deployments.replicas import ReplicaWatch
from deployments.types import ImageRequest, ImageResult, Route, StreamEvent

logger = logging.getLogger("ray.serve")

DESCRIBE_TIMEOUT_S = 5.0
DESCRIBE_EVERY_S = 5.0


@contextmanager
def model_errors(name: str, timeout: float) -> Iterator[None]:
    """Translate what a model call can raise into the service's errors."""
    try:
        yield
    except Flux2Error:
        raise
    except RayTaskError as exc:
        if isinstance(exc.cause, Flux2Error):
            raise exc.cause from None
        logger.error("model %s failed: %s", name, exc)
        raise GenerationFailed("the model failed to generate the image", code="generation_failed") from None
    except BackPressureError:
        raise Overloaded("the server is at capacity; retry shortly", retry_after_s=2, code="overloaded") from None
    except TimeoutError:
        raise DeadlineExceeded(f"generation did not finish within {timeout:g}s", code="timeout") from None
    except RayActorError:
        raise Unavailable(
            "the model replica serving this request died; retry", retry_after_s=5, code="replica_died"
        ) from None


def no_replica(name: str) -> Unavailable:
    return Unavailable(
        f"model {name} has no running replica right now (starting or being replaced); retry shortly",
        retry_after_s=10,
        code="no_replica",
    )


class ModelHandles:
    """The handle of each served model, its running replicas, and its config with the live settings its replicas
    last described (``configs``), beside the rest of what they said (``infos``)."""

    def __init__(self, handles: dict[str, DeploymentHandle], models: tuple[ModelConfig, ...]) -> None:
        self.handles = handles
        self.base = {model.served_name: model for model in models}  # what args say; replicas add live settings
        self.configs = dict(self.base)
        self.infos: dict[str, dict[str, Any]] = {}
        self.replicas = ReplicaWatch({name: model.deployment_name for name, model in self.base.items()})
        self._described_at: dict[str, float] = {}
        self._describing: asyncio.Task | None = None

    async def generate(self, target: Route, request: ImageRequest, limits: Limits) -> ImageResult:
        name = target.model.served_name
        await self._require_replica(name, limits)
        response = self._handle(target).generate.remote(request)
        with model_errors(name, limits.request_timeout_s):
            try:
                return await self._while_served(name, asyncio.wait_for(response, limits.request_timeout_s), limits)
            except (TimeoutError, asyncio.CancelledError, Unavailable):
                response.cancel()  # the replica stops the run at its next step instead of finishing it for no one
                raise

    async def stream(
        self, target: Route, request: ImageRequest, partial_images: int, limits: Limits
    ) -> AsyncGenerator[StreamEvent, None]:
        """The run's events; the first is awaited here, so an error before it still gets its own status."""
        timeout, name = limits.request_timeout_s, target.model.served_name
        await self._require_replica(name, limits)
        events = self._handle(target).options(stream=True).generate_stream.remote(request, partial_images)
        with model_errors(name, timeout):
            try:
                first = await self._while_served(name, asyncio.wait_for(events.__anext__(), timeout), limits)
            except (TimeoutError, asyncio.CancelledError, Unavailable):
                events.cancel()
                raise
        return self._rest_of_stream(first, events, name, timeout)

    def describe_in_background(self) -> None:
        """Ask for the details of models not described for ``DESCRIBE_EVERY_S`` (a replica's live settings, its
        adapters among them, change with ``reconfigure``), without making the request wait for them."""
        now = time.monotonic()
        due = [
            name for name in self.handles if name not in self.infos or now - self._described_at[name] > DESCRIBE_EVERY_S
        ]
        if due and (self._describing is None or self._describing.done()):
            self._describing = asyncio.create_task(self._describe(due))

    async def _describe(self, names: list[str]) -> None:
        async def describe(name: str) -> None:
            self._described_at[name] = time.monotonic()
            try:
                info = await asyncio.wait_for(self.handles[name].describe.remote(), DESCRIBE_TIMEOUT_S)
            except Exception:
                logger.info("model %s did not describe itself within %ss; asked again later", name, DESCRIBE_TIMEOUT_S)
                return
            settings = info.pop("settings")
            self.configs[name] = self.base[name].reconfigured(settings, LIVE_MODEL_KEYS)
            self.infos[name] = info

        await asyncio.gather(*(describe(name) for name in names))

    def _handle(self, target: Route) -> DeploymentHandle:
        """The model's handle; with LoRA adapters, multiplexed by their id, so Serve prefers a replica that
        already holds them."""
        handle = self.handles[target.model.served_name]
        return handle.options(multiplexed_model_id=target.adapters.id) if target.adapters else handle

    async def _require_replica(self, name: str, limits: Limits) -> None:
        """Answer at once (503 + Retry-After) when the model has no running replica, instead of letting the
        request wait for a replacement to load and warm up; ``limits.no_replica_wait_s`` waits that long first."""
        if not await self.replicas.wait_for_running(name, limits.no_replica_wait_s):
            raise no_replica(name)

    async def _while_served(self, name: str, call: Awaitable[Any], limits: Limits) -> Any:
        """``call``'s result, unless the model is left without a running replica first (its only one died after
        the request was routed): then Serve would hold the request until a replacement is warm, so it is answered
        503 as a new request would be."""
        waiting = asyncio.ensure_future(call)
        watch = asyncio.ensure_future(self._until_unserved(name, limits))
        try:
            await asyncio.wait({waiting, watch}, return_when=asyncio.FIRST_COMPLETED)
            if waiting.done():
                return waiting.result()
            return watch.result()  # raises Unavailable
        finally:
            watch.cancel()
            waiting.cancel()

    async def _until_unserved(self, name: str, limits: Limits) -> None:
        """Raise Unavailable once ``name`` has had no running replica for ``limits.no_replica_wait_s``."""
        while True:
            await self.replicas.until_none_running(name)
            if not await self.replicas.wait_for_running(name, limits.no_replica_wait_s):
                raise no_replica(name)

    @staticmethod
    async def _rest_of_stream(
        first: StreamEvent, events: DeploymentResponseGenerator, name: str, timeout: float
    ) -> AsyncGenerator[StreamEvent, None]:
        """The first event, then the replica's next ones with their errors translated; a stream left before its
        result (the client gone, an error) stops the run."""
        event = first
        try:
            while True:
                yield event
                if isinstance(event, ImageResult):
                    return
                with model_errors(name, timeout):
                    event = await events.__anext__()
        finally:
            if not isinstance(event, ImageResult):
                events.cancel()
