"""HTTP ingress: OpenAI-compatible Images API, model listing, health, one error shape.

CPU only: it decodes and validates uploads, picks the model deployment by the request's ``model``,
awaits its ``generate`` and encodes the images. It never touches torch.
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import contextmanager
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.api import (
    ImageParams,
    build_edit_request,
    build_generation_request,
    images_response,
    parse_params,
    stream_payloads,
)
from deployments.auth import ApiKeyCheck, load_api_keys
from deployments.config import ServiceConfig
from deployments.metrics import IngressMetrics
from deployments.protocol import ImageRequest, ImageResult, ServiceError

logger = logging.getLogger("ray.serve")

IMAGE_FIELDS = ("image", "image[]")
DESCRIBE_TIMEOUT_S = 5.0

app = FastAPI(
    title="FLUX.2 Images API",
    version="0.1.0",
    description="OpenAI-compatible image editing and generation with FLUX.2 on Ray Serve.",
)


@contextmanager
def model_errors(name: str, timeout: float) -> Iterator[None]:
    """Translate what a model call can raise into ServiceErrors with the right status."""
    try:
        yield
    except ServiceError:
        raise
    except RayTaskError as exc:
        if isinstance(exc.cause, ServiceError):
            raise exc.cause from None
        logger.error("model %s failed: %s", name, exc)
        raise ServiceError(
            "the model failed to generate the image", status=500, type="server_error", code="generation_failed"
        ) from None
    except BackPressureError:
        raise ServiceError(
            "the server is at capacity; retry shortly",
            status=503,
            type="server_error",
            code="overloaded",
            headers={"Retry-After": "2"},
        ) from None
    except TimeoutError:
        raise ServiceError(
            f"generation did not finish within {timeout:g}s", status=504, type="server_error", code="timeout"
        ) from None
    except RayActorError:
        raise ServiceError(
            "the model replica serving this request died; retry",
            status=503,
            type="server_error",
            code="replica_died",
            headers={"Retry-After": "5"},
        ) from None


def error_response(err: ServiceError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


@app.exception_handler(ServiceError)
async def _service_error(_: Request, err: ServiceError) -> JSONResponse:
    return error_response(err)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
    return error_response(ServiceError(str(err.detail), status=err.status_code, code=code))


@app.exception_handler(Exception)
async def _unexpected(_: Request, err: Exception) -> JSONResponse:
    logger.exception("unhandled error in the ingress")
    return error_response(ServiceError("internal server error", status=500, type="server_error"))


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing it (413) as soon as it exceeds ``limit``; Serve itself has no body limit."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ServiceError(
            f"request body is {declared} bytes; the limit is {limit}", status=413, code="request_too_large"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServiceError(f"request body exceeds the limit of {limit} bytes", status=413, code="request_too_large")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # Starlette's form() and json() reuse the body read here
    return body


def require_content_type(request: Request, expected: str) -> None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != expected:
        raise ServiceError(
            f"Content-Type must be {expected}, got {content_type or 'none'}", status=415, code="unsupported_media_type"
        )


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.25})
@serve.ingress(app)
class ImagesIngress:
    """Routes OpenAI Images API requests to the model deployments by model name."""

    def __init__(self, models: dict[str, DeploymentHandle], service_config: dict[str, Any]):
        self.config = ServiceConfig.model_validate(service_config)
        self.models = models
        self.model_configs = {m.served_name: m for m in self.config.models}
        self.check_api_key = ApiKeyCheck(load_api_keys(self.config.auth))
        self.metrics = IngressMetrics()
        self._infos: dict[str, dict[str, Any]] = {}

    @app.post("/v1/images/generations")
    async def generations(self, request: Request) -> Response:
        return await self._observed(request, self._generations(request))

    @app.post("/v1/images/edits")
    async def edits(self, request: Request) -> Response:
        return await self._observed(request, self._edits(request))

    async def _generations(self, request: Request) -> Response:
        started = time.perf_counter()
        self.check_api_key(request.headers.get("authorization"))
        limits = self.config.limits
        require_content_type(request, "application/json")
        await read_body(request, limits.max_body_bytes)
        try:
            fields = await request.json()
        except ValueError:
            raise ServiceError("request body is not valid JSON", code="invalid_json") from None
        if not isinstance(fields, dict):
            raise ServiceError("request body must be a JSON object", code="invalid_json")
        params = parse_params(fields)
        name = request.state.model = self._model_name(params)
        image_request = build_generation_request(params, limits, self.model_configs[name].default_size)
        if params.stream:
            return await self._stream(name, image_request, params, "image_generation")
        return await self._generate(request, name, image_request, params, started)

    async def _edits(self, request: Request) -> Response:
        started = time.perf_counter()
        self.check_api_key(request.headers.get("authorization"))
        limits = self.config.limits
        require_content_type(request, "multipart/form-data")
        await read_body(request, limits.max_body_bytes)
        fields, images, mask = await self._read_form(request)
        params = parse_params(fields)
        name = request.state.model = self._model_name(params)
        # Decoding and encoding images take tens of ms: off the event loop, so other requests keep flowing.
        image_request = await asyncio.to_thread(build_edit_request, params, images, mask, limits)
        if params.stream:
            return await self._stream(name, image_request, params, "image_edit")
        return await self._generate(request, name, image_request, params, started)

    @app.get("/v1/models")
    async def list_models(self, request: Request) -> dict[str, Any]:
        self.check_api_key(request.headers.get("authorization"))
        infos = await self._describe_all()
        data = [
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "flux2-serve",
                "streaming": True,  # stream=true is served; the playground uses it when this says so
                **infos.get(name, {}),
            }
            for name in self.model_configs
        ]
        return {"object": "list", "data": data}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground(self) -> HTMLResponse:
        return HTMLResponse(files("deployments").joinpath("static/index.html").read_text(encoding="utf-8"))

    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Ready when every model has a running replica, by the controller's account.

        Asking the replicas themselves would queue behind generations when they are busy, and a busy
        service is not an unready one.
        """
        running = await asyncio.to_thread(self._running_replicas)
        ready = all(running.values())
        body = {
            "status": "ready" if ready else "not_ready",
            "models": {name: {"running_replicas": count} for name, count in running.items()},
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    def _running_replicas(self) -> dict[str, int]:
        application = serve.status().applications[serve.get_replica_context().app_name]
        return {
            name: application.deployments[config.deployment_name].replica_states.get("RUNNING", 0)
            if config.deployment_name in application.deployments
            else 0
            for name, config in self.model_configs.items()
        }

    async def _observed(self, request: Request, handler: Awaitable[Response]) -> Response:
        """Count the request by route, model and status (errors included) and time it."""
        started, status = time.perf_counter(), 500
        try:
            response = await handler
            status = response.status_code
            return response
        except ServiceError as err:
            status = err.status
            raise
        finally:
            model = getattr(request.state, "model", "")
            images = getattr(request.state, "images", 0)
            self.metrics.observe(request.url.path, model, status, time.perf_counter() - started, images)

    def _model_name(self, params: ImageParams) -> str:
        name = params.model or self.config.default_model
        if name not in self.models:
            raise ServiceError(
                f"The model '{name}' does not exist. Available: {sorted(self.models)}",
                status=404,
                param="model",
                code="model_not_found",
            )
        return name

    async def _read_form(self, request: Request) -> tuple[dict[str, str], list[bytes], bytes | None]:
        limits = self.config.limits
        try:
            form = await request.form(
                max_files=limits.max_reference_images + 8, max_fields=64, max_part_size=limits.max_body_bytes
            )
        except Exception as exc:  # malformed multipart, too many parts
            raise ServiceError(f"could not parse multipart form: {exc}", code="invalid_multipart") from None
        fields: dict[str, str] = {}
        images: list[bytes] = []
        mask: bytes | None = None
        for key, value in form.multi_items():
            if key in IMAGE_FIELDS or key == "mask":
                data = await value.read() if isinstance(value, UploadFile) else value.encode()
                if key == "mask":
                    mask = data
                else:
                    images.append(data)
            elif isinstance(value, UploadFile):
                raise ServiceError(f"unexpected file field '{key}'", param=key, code="invalid_value")
            elif key in fields:
                raise ServiceError(f"field '{key}' was sent more than once", param=key, code="invalid_value")
            else:
                fields[key] = value
        await form.close()
        return fields, images, mask

    async def _generate(
        self, request: Request, name: str, image_request: ImageRequest, params: ImageParams, started: float
    ) -> Response:
        parsed = time.perf_counter()
        result = await self._call_model(name, image_request)
        returned = time.perf_counter()
        request.state.images = len(result.images)
        # Encoding images and rendering megabytes of base64 JSON take milliseconds: not on the event loop.
        content = await asyncio.to_thread(images_response, result, params)
        done = time.perf_counter()
        total_ms = (done - started) * 1000
        timings = result.timings
        generate_s, queue_s, output_s = (timings.get(key, 0.0) for key in ("generate_s", "queue_s", "output_s"))
        stages = {
            "parse": parsed - started,  # read the body, validate, decode reference images
            "queue": queue_s,  # waiting in the replica for the engine
            "generate": generate_s,
            "handle": returned - parsed - queue_s - generate_s - output_s,  # Ray: routing, transfers, bookkeeping
            "encode": output_s + done - returned,  # images off the GPU (JPEG there or pixels), encoding, base64, JSON
        }
        headers = {
            "x-model": name,
            "x-model-weights": result.weights,
            "x-seed": str(result.seed),
            "x-num-inference-steps": str(result.num_inference_steps),
            "x-mask-applied": str(result.mask_applied).lower(),
            "x-step-cache": str(result.step_cache).lower(),
            "x-batch-size": str(int(result.timings.get("batch_size", 1))),
            "x-generate-ms": f"{generate_s * 1000:.1f}",
            "x-queue-ms": f"{queue_s * 1000:.1f}",
            "x-total-ms": f"{total_ms:.1f}",
            "server-timing": ", ".join(f"{key};dur={value * 1000:.1f}" for key, value in stages.items()),
        }
        return Response(content, media_type="application/json", headers=headers)

    async def _call_model(self, name: str, image_request: ImageRequest) -> ImageResult:
        timeout = self.config.limits.request_timeout_s
        response = self.models[name].generate.remote(image_request)
        with model_errors(name, timeout):
            try:
                return await asyncio.wait_for(response, timeout)
            except (TimeoutError, asyncio.CancelledError):
                response.cancel()  # the replica stops the run at its next step instead of finishing it for no one
                raise

    async def _stream(
        self, name: str, image_request: ImageRequest, params: ImageParams, event_prefix: str
    ) -> StreamingResponse:
        """Server-sent events in the OpenAI Images streaming shape, plus a ``.progress`` event a step."""
        timeout = self.config.limits.request_timeout_s
        handle = self.models[name].options(stream=True)
        events = handle.generate_stream.remote(image_request, params.partial_images or 0)
        with model_errors(name, timeout):  # errors before the first event still get a proper status code
            try:
                first = await asyncio.wait_for(events.__anext__(), timeout)
            except (TimeoutError, asyncio.CancelledError):
                events.cancel()
                raise

        async def body() -> AsyncIterator[str]:
            event = first
            try:
                while True:
                    for payload in await asyncio.to_thread(stream_payloads, event, params, event_prefix):
                        yield f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n"
                    if isinstance(event, ImageResult):
                        return
                    with model_errors(name, timeout):
                        event = await events.__anext__()
            except ServiceError as err:
                yield f"event: error\ndata: {json.dumps({'type': 'error', **err.body()})}\n\n"
            finally:
                if not isinstance(event, ImageResult):
                    events.cancel()  # the client left or an error ended the stream: stop the run

        headers = {"x-model": name, "x-seed": str(image_request.seed), "cache-control": "no-store"}
        return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

    async def _describe_all(self) -> dict[str, dict[str, Any]]:
        """Each model's description, asked once and kept: it is fixed once a replica is up."""

        async def describe(name: str) -> None:
            try:
                self._infos[name] = await asyncio.wait_for(self.models[name].describe.remote(), DESCRIBE_TIMEOUT_S)
            except Exception:
                logger.warning("model %s did not describe itself within %ss", name, DESCRIBE_TIMEOUT_S)

        await asyncio.gather(*(describe(name) for name in self.models if name not in self._infos))
        return self._infos
