"""HTTP ingress: the OpenAI-compatible Images API, model listing, health and the playground page.

CPU only: it reads and validates requests, picks the model deployment by the request's ``model``,
awaits its ``generate`` and encodes the images. This is the one place that knows HTTP: errors from
everywhere else carry a parameter and a code, and ``STATUS`` turns their class into a status.
"""

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import contextmanager
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic.json_schema import models_json_schema
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.auth import ApiKeyCheck, load_api_keys
from deployments.config import LIVE_MODEL_KEYS, LIVE_SERVICE_KEYS, Limits, ServiceConfig
from deployments.errors import (
    BodyTimeout,
    DeadlineExceeded,
    Flux2Error,
    GenerationFailed,
    InvalidRequest,
    NotFound,
    Overloaded,
    Retryable,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from deployments.metrics import IngressMetrics
from deployments.openai.protocol import (
    ErrorResponse,
    ImageEditRequest,
    ImageGenerationRequest,
    ImageParams,
    ImagesResponse,
    ModelCard,
    ModelList,
    form_lora,
    multipart_schema,
    parse_form_fields,
    parse_json_body,
)
from deployments.openai.references import ReferenceCache
from deployments.openai.serving import (
    Route,
    build_edit_request,
    build_generation_request,
    images_response,
    model_cards,
    route,
    stream_payloads,
)
from deployments.replicas import ReplicaWatch
from deployments.types import ImageRequest, ImageResult

logger = logging.getLogger("ray.serve")

IMAGE_FIELDS = ("image", "image[]")
STATIC = files("deployments").joinpath("static")
STATIC_TYPES = {"js": "text/javascript", "css": "text/css", "png": "image/png", "svg": "image/svg+xml"}
# The files the page may ask for, listed once: a request's name is looked up here and never reaches the file system.
STATIC_FILES = {
    item.name: STATIC_TYPES[item.name.rpartition(".")[2]]
    for item in STATIC.iterdir()
    if item.is_file() and item.name.rpartition(".")[2] in STATIC_TYPES
}
DESCRIBE_TIMEOUT_S = 5.0
DESCRIBE_EVERY_S = 5.0

# The one table from error class to HTTP status. Subclasses come before their base class.
STATUS: tuple[tuple[type[Flux2Error], int], ...] = (
    (InvalidRequest, 400),
    (Unauthorized, 401),
    (NotFound, 404),
    (TooLarge, 413),
    (UnsupportedMediaType, 415),
    (Overloaded, 503),
    (Unavailable, 503),
    (GenerationFailed, 500),
    (DeadlineExceeded, 504),
    (BodyTimeout, 408),
)


def status_of(err: Flux2Error) -> int:
    return next((status for cls, status in STATUS if isinstance(err, cls)), 500)


def error_body(err: Flux2Error) -> dict[str, Any]:
    """The OpenAI error object: the one shape of every error, answered or streamed."""
    kind = "invalid_request_error" if status_of(err) < 500 else "server_error"
    return {"message": err.message, "type": kind, "param": err.param, "code": err.code}


def error_response(err: Flux2Error) -> JSONResponse:
    """The error object with the status and the headers the error's meaning calls for."""
    headers = {}
    if isinstance(err, Retryable):
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after_s)))
    if isinstance(err, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(err, BodyTimeout):
        headers["Connection"] = "close"  # the rest of the body may still come: the connection cannot be reused
    return JSONResponse({"error": error_body(err)}, status_code=status_of(err), headers=headers)


# What OpenAPI lists for every route: the statuses of STATUS, and 500 for the unexpected.
ERRORS = {status: {"model": ErrorResponse} for status in sorted({status for _, status in STATUS} | {500})}


def json_body(model: type) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": _ref(model)}}}}


def multipart_body(model: type) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{model.__name__}Form"}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def _ref(model: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


app = FastAPI(
    title="FLUX.2 Images API",
    version="0.1.0",
    description="OpenAI-compatible image editing and generation with FLUX.2 on Ray Serve.",
)


def openapi() -> dict[str, Any]:
    """FastAPI's schema plus the request bodies: the routes read their bodies themselves (to bound their size
    while reading), so the request models are added to the components here."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    template = "#/components/schemas/{model}"
    _, defs = models_json_schema([(ImageGenerationRequest, "validation")], ref_template=template)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(defs.get("$defs", {}))
    components[f"{ImageEditRequest.__name__}Form"] = multipart_schema(ImageEditRequest, template)
    app.openapi_schema = schema
    return schema


app.openapi = openapi


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


@app.exception_handler(Flux2Error)
async def _service_error(_: Request, err: Flux2Error) -> JSONResponse:
    return error_response(err)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
    body = {"error": {"message": str(err.detail), "type": "invalid_request_error", "param": None, "code": code}}
    return JSONResponse(body, status_code=err.status_code, headers=getattr(err, "headers", None))


@app.exception_handler(Exception)
async def _unexpected(_: Request, err: Exception) -> JSONResponse:
    logger.exception("unhandled error in the ingress")
    return error_response(GenerationFailed("internal server error", code="internal_error"))


async def read_body(request: Request, limits: Limits) -> bytes:
    """Read the body, refusing it as soon as it exceeds ``limits.max_body_bytes`` (Serve has no body limit) or
    misses its deadline: ``body_timeout_s`` plus a second per ``min_body_bytes_per_s`` of it (of what has arrived,
    when no Content-Length says). A client that sends headers and then stalls holds its slot that long at most."""
    limit = limits.max_body_bytes
    declared = request.headers.get("content-length")
    expected = int(declared) if declared and declared.isdigit() else None
    if expected is not None and expected > limit:
        raise TooLarge(f"request body is {declared} bytes; the limit is {limit}", code="request_too_large")
    started = time.monotonic()
    chunks, size = [], 0
    stream = request.stream()
    while True:
        allowed = limits.body_timeout_s + (expected if expected is not None else size) / limits.min_body_bytes_per_s
        try:
            chunk = await asyncio.wait_for(anext(stream), max(0.0, started + allowed - time.monotonic()))
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise BodyTimeout(
                f"the request body did not arrive within {allowed:.1f}s ({size} bytes received)", code="body_timeout"
            ) from None
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body exceeds the limit of {limit} bytes", code="request_too_large")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # Starlette's form() reuses the body read here
    return body


def require_content_type(request: Request, expected: str) -> None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != expected:
        raise UnsupportedMediaType(
            f"Content-Type must be {expected}, got {content_type or 'none'}", code="unsupported_media_type"
        )


@serve.ingress(app)
class ImagesIngress:
    """Routes OpenAI Images API requests to the model deployments by model name."""

    @staticmethod
    def deployment_options(config: ServiceConfig) -> dict[str, Any]:
        """The ingress only awaits: it takes many requests at once on a quarter of a CPU. Its slots are many,
        because a client still sending its body holds one (up to ``limits.body_timeout_s``): a few hundred slow
        sockets must not fill them. What protects the GPU is the model deployments' own queue bounds."""
        return {
            "max_ongoing_requests": 4096,
            "ray_actor_options": {"num_cpus": 0.25},
            "user_config": config.model_dump(include=set(LIVE_SERVICE_KEYS), mode="json"),
            **config.ingress_options,
        }

    def __init__(self, models: dict[str, DeploymentHandle], config: ServiceConfig):
        self.base_config = config  # what args say; reconfigure applies user_config over it
        self.config = config
        self.models = models
        self._reconfigured = False  # the first reconfigure comes right after the constructor
        self.model_configs = {m.served_name: m for m in config.models}
        self.check_api_key = ApiKeyCheck(load_api_keys(config.auth))
        self.references = ReferenceCache(config.reference_cache_mb)
        self.metrics = IngressMetrics(list(self.model_configs), self.references.stats)
        self.replicas = ReplicaWatch({name: m.deployment_name for name, m in self.model_configs.items()})
        self._infos: dict[str, dict[str, Any]] = {}
        self._described_at: dict[str, float] = {}
        self._describing: asyncio.Task | None = None

    async def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Serve's ``user_config``: the request limits (``LIVE_SERVICE_KEYS``) applied without a restart; keys it
        leaves out take the args' values. Each model's own live settings arrive with its description. As for the
        model replicas, settings that cannot apply fail a starting replica and leave a running one as it was."""
        try:
            config = self.base_config.reconfigured(user_config, LIVE_SERVICE_KEYS)
        except ValueError as exc:
            if not self._reconfigured:
                raise
            logger.error("ingress: user_config not applied, limits kept as they were: %s", exc)
            return
        self.config, self._reconfigured = config, True
        self.references.resize(config.reference_cache_mb)
        logger.info("ingress reconfigured: limits %s", self.config.limits.model_dump(exclude_defaults=True))

    @app.post(
        "/v1/images/generations",
        openapi_extra=json_body(ImageGenerationRequest),
        response_model=ImagesResponse,
        responses=ERRORS,
    )
    async def generations(self, request: Request) -> Response:
        return await self._observed(request, self._generations(request))

    @app.post(
        "/v1/images/edits",
        openapi_extra=multipart_body(ImageEditRequest),
        response_model=ImagesResponse,
        responses=ERRORS,
    )
    async def edits(self, request: Request) -> Response:
        return await self._observed(request, self._edits(request))

    async def _generations(self, request: Request) -> Response:
        arrived = time.time()
        self.check_api_key(request.headers.get("authorization"))
        limits = self.config.limits
        require_content_type(request, "application/json")
        params = parse_json_body(await read_body(request, limits))
        target = self._route(request, params)
        image_request = build_generation_request(params, limits, target)
        if params.stream:
            return await self._stream(target, image_request, params, "image_generation")
        return await self._generate(request, target, image_request, params, arrived)

    async def _edits(self, request: Request) -> Response:
        arrived = time.time()
        self.check_api_key(request.headers.get("authorization"))
        limits = self.config.limits
        require_content_type(request, "multipart/form-data")
        await read_body(request, limits)
        fields, images, mask = await self._read_form(request)
        params = parse_form_fields(fields)
        target = self._route(request, params)
        # Decoding and encoding images take tens of ms: off the event loop, so other requests keep flowing.
        image_request = await asyncio.to_thread(
            build_edit_request, params, images, mask, limits, target, self.references
        )
        if params.stream:
            return await self._stream(target, image_request, params, "image_edit")
        return await self._generate(request, target, image_request, params, arrived)

    @app.api_route("/v1/models", response_model=ModelList, methods=["GET", "HEAD"], responses=ERRORS)
    async def list_models(self, request: Request) -> dict[str, Any]:
        """Answered from the config and what the replicas said of themselves earlier: never waits for a replica."""
        self.check_api_key(request.headers.get("authorization"))
        self._describe_in_background()
        return {"object": "list", "data": [card for name in self.model_configs for card in self._cards(name)]}

    @app.api_route("/v1/models/{model_id:path}", response_model=ModelCard, methods=["GET", "HEAD"], responses=ERRORS)
    async def retrieve_model(self, model_id: str, request: Request) -> dict[str, Any]:
        self.check_api_key(request.headers.get("authorization"))
        self._describe_in_background()
        cards = {card["id"]: card for name in self.model_configs for card in self._cards(name)}
        if model_id not in cards:
            raise NotFound(f"The model '{model_id}' does not exist", param="model", code="model_not_found")
        return cards[model_id]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground(self) -> HTMLResponse:
        return HTMLResponse(STATIC.joinpath("index.html").read_text(encoding="utf-8"))

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(self, name: str) -> Response:
        """The playground's scripts, styles and images: only the files of ``STATIC_FILES``."""
        if name not in STATIC_FILES:
            raise NotFound(f"no static file {name[:100]!r}", code="not_found")
        headers = {"cache-control": "no-cache"}
        return Response(STATIC.joinpath(name).read_bytes(), media_type=STATIC_FILES[name], headers=headers)

    @app.api_route("/healthz", methods=["GET", "HEAD"])
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.api_route("/readyz", methods=["GET", "HEAD"])
    async def readyz(self) -> JSONResponse:
        """Ready when every model has a running replica, by the controller's account.

        Asking the replicas themselves would queue behind generations when they are busy, and a busy
        service is not an unready one.
        """
        running = {name: count or 0 for name, count in (await self.replicas.refresh()).items()}
        ready = all(running.values())
        body = {
            "status": "ready" if ready else "not_ready",
            "models": {name: {"running_replicas": count} for name, count in running.items()},
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    async def _observed(self, request: Request, handler: Awaitable[Response]) -> Response:
        """Count the request by route, model and status (errors included) and time it."""
        started, status = time.perf_counter(), 500
        try:
            response = await handler
            status = response.status_code
            return response
        except Flux2Error as err:
            status = status_of(err)
            raise
        finally:
            model = getattr(request.state, "model", "")
            self.metrics.observe(request.url.path, model, status, time.perf_counter() - started)
            self.metrics.references.publish(self.references.stats)

    def _route(self, request: Request, params: ImageParams) -> Route:
        self._describe_in_background()
        target = route(params, self.model_configs, self.config.default_model)
        request.state.model = target.model.served_name
        return target

    def _cards(self, name: str) -> list[dict[str, Any]]:
        return model_cards(self.model_configs[name], self.config.limits, self._infos.get(name))

    async def _read_form(self, request: Request) -> tuple[dict[str, str], list[bytes], bytes | None]:
        limits = self.config.limits
        try:
            form = await request.form(
                max_files=limits.max_reference_images + 8, max_fields=64, max_part_size=limits.max_body_bytes
            )
        except Exception as exc:  # malformed multipart, too many parts
            raise InvalidRequest(f"could not parse multipart form: {exc}", code="invalid_multipart") from None
        fields: dict[str, Any] = {}
        images: list[bytes] = []
        mask: bytes | None = None
        lora: dict[str, list[str]] = {"lora[][name]": [], "lora[][scale]": []}
        for key, value in form.multi_items():
            if key in lora and isinstance(value, str):  # repeated by design: one a LoRA adapter
                lora[key].append(value)
            elif key in IMAGE_FIELDS or key == "mask":
                data = await value.read() if isinstance(value, UploadFile) else value.encode()
                if key == "mask" and mask is not None:
                    raise InvalidRequest("field 'mask' was sent more than once", param="mask", code="invalid_value")
                if key == "mask":
                    mask = data
                else:
                    images.append(data)
            elif isinstance(value, UploadFile):
                raise InvalidRequest(f"unexpected file field '{key}'", param=key, code="invalid_value")
            elif key in fields:
                raise InvalidRequest(f"field '{key}' was sent more than once", param=key, code="invalid_value")
            else:
                fields[key] = value
        await form.close()
        if lora["lora[][name]"] or lora["lora[][scale]"]:
            if "lora" in fields:
                raise InvalidRequest("send lora as lora[][name] fields only", param="lora", code="invalid_value")
            fields["lora"] = form_lora(lora["lora[][name]"], lora["lora[][scale]"])
        return fields, images, mask

    async def _generate(
        self, request: Request, target: Route, image_request: ImageRequest, params: ImageParams, arrived: float
    ) -> Response:
        parsed = time.time()
        name = target.model.served_name
        result = await self._call_model(target, image_request)
        returned = time.time()
        self.metrics.images_out(name, len(result.images))
        # Encoding images and rendering megabytes of base64 JSON take milliseconds: not on the event loop.
        content = await asyncio.to_thread(images_response, result, params, self.references)
        done = time.time()
        timings = result.timings
        waited = max(0.0, timings.started_at - parsed)  # Serve's queue, then the replica's
        stages = {
            "parse": parsed - arrived,  # read the body, validate, decode reference images
            "queue": waited,
            "adapter": timings.adapter_s,  # LoRA adapters read (first use) and switched in
            "generate": timings.generate_s,
            "handle": returned - parsed - waited - timings.adapter_s - timings.generate_s - timings.output_s,
            "encode": timings.output_s + done - returned,  # images off the GPU, encoding, base64, JSON
        }
        headers = {
            "x-model": name,
            "x-model-weights": result.weights,
            "x-lora": target.multiplexed_id,
            "x-seed": str(result.seed),
            "x-num-inference-steps": str(result.num_inference_steps),
            "x-mask-applied": str(result.mask_applied).lower(),
            "x-step-cache": str(result.step_cache).lower(),
            "x-batch-size": str(timings.batch_size),
            "x-generate-ms": f"{timings.generate_s * 1000:.1f}",
            "x-queue-ms": f"{(parsed - arrived + waited) * 1000:.1f}",  # from arrival to the start of generation
            "x-total-ms": f"{(done - arrived) * 1000:.1f}",
            "server-timing": ", ".join(f"{key};dur={value * 1000:.1f}" for key, value in stages.items()),
        }
        return Response(content, media_type="application/json", headers=headers)

    def _handle(self, target: Route) -> DeploymentHandle:
        """The model's handle; with LoRA adapters, multiplexed by the stack, so Serve prefers a replica that
        already holds it."""
        handle = self.models[target.model.served_name]
        return handle.options(multiplexed_model_id=target.multiplexed_id) if target.adapters else handle

    async def _call_model(self, target: Route, image_request: ImageRequest) -> ImageResult:
        timeout, name = self.config.limits.request_timeout_s, target.model.served_name
        await self._require_replica(name)
        response = self._handle(target).generate.remote(image_request)
        with model_errors(name, timeout):
            try:
                return await self._while_served(name, asyncio.wait_for(response, timeout))
            except (TimeoutError, asyncio.CancelledError, Unavailable):
                response.cancel()  # the replica stops the run at its next step instead of finishing it for no one
                raise

    async def _require_replica(self, name: str) -> None:
        """Answer at once (503 + Retry-After) when the model has no running replica, instead of letting the
        request wait for a replacement to load and warm up; ``limits.no_replica_wait_s`` waits that long first."""
        if not await self.replicas.wait_for_running(name, self.config.limits.no_replica_wait_s):
            raise self._no_replica(name)

    async def _while_served(self, name: str, call: Awaitable[Any]) -> Any:
        """``call``'s result, unless the model is left without a running replica first (its only one died after
        the request was routed): then Serve would hold the request until a replacement is warm, so it is answered
        503 as a new request would be."""
        waiting = asyncio.ensure_future(call)
        watch = asyncio.ensure_future(self._until_unserved(name))
        try:
            await asyncio.wait({waiting, watch}, return_when=asyncio.FIRST_COMPLETED)
            if waiting.done():
                return waiting.result()
            return watch.result()  # raises Unavailable
        finally:
            watch.cancel()
            waiting.cancel()

    async def _until_unserved(self, name: str) -> None:
        """Raise Unavailable once ``name`` has had no running replica for ``limits.no_replica_wait_s``."""
        while True:
            await self.replicas.until_none_running(name)
            if not await self.replicas.wait_for_running(name, self.config.limits.no_replica_wait_s):
                raise self._no_replica(name)

    @staticmethod
    def _no_replica(name: str) -> Unavailable:
        return Unavailable(
            f"model {name} has no running replica right now (starting or being replaced); retry shortly",
            retry_after_s=10,
            code="no_replica",
        )

    async def _stream(
        self, target: Route, image_request: ImageRequest, params: ImageParams, event_prefix: str
    ) -> StreamingResponse:
        """Server-sent events in the OpenAI Images streaming shape, plus a ``.progress`` event a step."""
        timeout, name = self.config.limits.request_timeout_s, target.model.served_name
        await self._require_replica(name)
        handle = self._handle(target).options(stream=True)
        events = handle.generate_stream.remote(image_request, params.partial_images or 0)
        with model_errors(name, timeout):  # errors before the first event still get a proper status code
            try:
                first = await self._while_served(name, asyncio.wait_for(events.__anext__(), timeout))
            except (TimeoutError, asyncio.CancelledError, Unavailable):
                events.cancel()
                raise

        async def body() -> AsyncIterator[str]:
            event = first
            try:
                while True:
                    payloads = await asyncio.to_thread(stream_payloads, event, params, event_prefix, self.references)
                    for payload in payloads:
                        yield f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n"
                    if isinstance(event, ImageResult):
                        self.metrics.images_out(name, len(event.images))
                        return
                    with model_errors(name, timeout):
                        event = await events.__anext__()
            except Flux2Error as err:
                yield f"event: error\ndata: {json.dumps({'type': 'error', 'error': error_body(err)})}\n\n"
            finally:
                if not isinstance(event, ImageResult):
                    events.cancel()  # the client left or an error ended the stream: stop the run

        headers = {
            "x-model": name,
            "x-seed": str(image_request.seed),
            "x-lora": target.multiplexed_id,
            "cache-control": "no-store",
        }
        return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

    def _describe_in_background(self) -> None:
        """Ask for the details of models not described for ``DESCRIBE_EVERY_S`` (a replica's live settings, its
        adapters among them, change with ``reconfigure``), without making the request wait for them."""
        now = time.monotonic()
        due = [
            name for name in self.models if name not in self._infos or now - self._described_at[name] > DESCRIBE_EVERY_S
        ]
        if due and (self._describing is None or self._describing.done()):
            self._describing = asyncio.create_task(self._describe(due))

    async def _describe(self, names: list[str]) -> None:
        async def describe(name: str) -> None:
            self._described_at[name] = time.monotonic()
            try:
                info = await asyncio.wait_for(self.models[name].describe.remote(), DESCRIBE_TIMEOUT_S)
            except Exception:
                logger.info("model %s did not describe itself within %ss; asked again later", name, DESCRIBE_TIMEOUT_S)
                return
            settings = info.pop("settings")
            self.model_configs[name] = self.base_config.model(name).reconfigured(settings, LIVE_MODEL_KEYS)
            self._infos[name] = info

        await asyncio.gather(*(describe(name) for name in names))
