"""HTTP ingress: the FastAPI app, its routes (Images API, model listing, health, the playground page) and the
ingress deployment (its Serve options, reconfigure, the model handles).

CPU only. Each route reads its body (``request_body``), hands it to the wire package (``openai/``) to parse and
resolve, awaits the model deployment (``handles``) and returns what ``openai/`` builds. Errors from everywhere
carry a parameter and a code; ``openai.errors`` turns their class into a status.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments import playground
from deployments.auth import ApiKeyCheck, load_api_keys
from deployments.config import LIVE_SERVICE_KEYS, ServiceConfig
from deployments.errors import Flux2Error, GenerationFailed, NotFound
from deployments.handles import ModelHandles
from deployments.metrics import IngressMetrics
from deployments.openai.errors import ERROR_RESPONSES, error_response, routing_error_response, status_of
from deployments.openai.headers import Clock, image_headers, stream_headers
from deployments.openai.multipart import parse_edit_form
from deployments.openai.openapi import document, json_body, multipart_body
from deployments.openai.protocol import (
    Health,
    ImageEditRequest,
    ImageGenerationRequest,
    ImageParams,
    ImagesResponse,
    ModelCard,
    ModelList,
    parse_form_fields,
    parse_json_body,
)
from deployments.openai.references import ReferenceCache
from deployments.openai.routing import route
from deployments.openai.serving import build_edit_request, build_generation_request, images_response, model_cards
from deployments.openai.sse import event_stream
from deployments.request_body import read_body, require_content_type
from deployments.types import ImageRequest, ImageResult, Route

logger = logging.getLogger("ray.serve")

app = FastAPI(
    title="FLUX.2 Images API",
    version="0.1.0",
    description="OpenAI-compatible image editing and generation with FLUX.2 on Ray Serve.",
)


# FastAPI's document finished (the request bodies the routes read themselves, one id an operation); cached once built.
app.openapi = lambda: app.openapi_schema or document(lambda: FastAPI.openapi(app))


@app.exception_handler(Flux2Error)
async def _service_error(_: Request, err: Flux2Error) -> JSONResponse:
    return error_response(err)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
    return routing_error_response(err.status_code, str(err.detail), getattr(err, "headers", None))


@app.exception_handler(Exception)
async def _unexpected(_: Request, err: Exception) -> JSONResponse:
    logger.exception("unhandled error in the ingress")
    return error_response(GenerationFailed("internal server error", code="internal_error"))


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
        self.models = ModelHandles(models, config.models)
        self._reconfigured = False  # the first reconfigure comes right after the constructor
        self.check_api_key = ApiKeyCheck(load_api_keys(config.auth))
        self.references = ReferenceCache(config.reference_cache_mb)
        self.metrics = IngressMetrics(list(self.models.configs), self.references.stats)

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
        responses=ERROR_RESPONSES,
    )
    async def generations(self, request: Request) -> Response:
        return await self._observed(request, self._generations(request))

    @app.post(
        "/v1/images/edits",
        openapi_extra=multipart_body(ImageEditRequest),
        response_model=ImagesResponse,
        responses=ERROR_RESPONSES,
    )
    async def edits(self, request: Request) -> Response:
        return await self._observed(request, self._edits(request))

    async def _generations(self, request: Request) -> Response:
        arrived = time.time()
        self.check_api_key(request.headers.get("authorization"))
        limits = self.config.limits
        require_content_type(request.headers.get("content-type"), "application/json")
        params = parse_json_body(await read_body(request.stream(), request.headers.get("content-length"), limits))
        target = self._route(request, params)
        image_request = build_generation_request(params, limits, target)
        if params.stream:
            return await self._stream(target, image_request, params, "image_generation")
        return await self._generate(target, image_request, params, arrived)

    async def _edits(self, request: Request) -> Response:
        arrived = time.time()
        self.check_api_key(request.headers.get("authorization"))
        limits = self.config.limits
        require_content_type(request.headers.get("content-type"), "multipart/form-data")
        body = await read_body(request.stream(), request.headers.get("content-length"), limits)
        fields, images, mask = await parse_edit_form(body, request.headers["content-type"], limits)
        params = parse_form_fields(fields)
        target = self._route(request, params)
        # Decoding and encoding images take tens of ms: off the event loop, so other requests keep flowing.
        image_request = await asyncio.to_thread(
            build_edit_request, params, images, mask, limits, target, self.references
        )
        if params.stream:
            return await self._stream(target, image_request, params, "image_edit")
        return await self._generate(target, image_request, params, arrived)

    @app.api_route("/v1/models", response_model=ModelList, methods=["GET", "HEAD"], responses=ERROR_RESPONSES)
    async def list_models(self, request: Request) -> ModelList:
        """Answered from the config and what the replicas said of themselves earlier: never waits for a replica."""
        self.check_api_key(request.headers.get("authorization"))
        self.models.describe_in_background()
        return ModelList(data=[card for name in self.models.configs for card in self._cards(name)])

    @app.api_route(
        "/v1/models/{model_id:path}", response_model=ModelCard, methods=["GET", "HEAD"], responses=ERROR_RESPONSES
    )
    async def retrieve_model(self, model_id: str, request: Request) -> ModelCard:
        self.check_api_key(request.headers.get("authorization"))
        self.models.describe_in_background()
        cards = {card.id: card for name in self.models.configs for card in self._cards(name)}
        if model_id not in cards:
            raise NotFound(f"The model '{model_id}' does not exist", param="model", code="model_not_found")
        return cards[model_id]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(playground.page())

    @app.get("/static/{name}", include_in_schema=False)
    async def static(self, name: str) -> Response:
        """The playground's scripts, styles and images: only the files of ``playground.STATIC_FILES``."""
        content, media_type = playground.static_file(name)
        return Response(content, media_type=media_type, headers={"cache-control": "no-cache"})

    @app.api_route("/healthz", response_model=Health, methods=["GET", "HEAD"])
    async def healthz(self) -> Health:
        return Health()

    @app.api_route("/readyz", methods=["GET", "HEAD"])
    async def readyz(self) -> JSONResponse:
        """Ready when every model has a running replica, by the controller's account.

        Asking the replicas themselves would queue behind generations when they are busy, and a busy
        service is not an unready one.
        """
        running = {name: count or 0 for name, count in (await self.models.replicas.refresh()).items()}
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
        self.models.describe_in_background()
        target = route(params, self.models.configs, self.config.default_model)
        request.state.model = target.model.served_name
        return target

    def _cards(self, name: str) -> list[ModelCard]:
        return model_cards(self.models.configs[name], self.config.limits, self.models.infos.get(name))

    async def _generate(
        self, target: Route, image_request: ImageRequest, params: ImageParams, arrived: float
    ) -> Response:
        parsed = time.time()
        result = await self.models.generate(target, image_request, self.config.limits)
        returned = time.time()
        self.metrics.images_out(target.model.served_name, len(result.images))
        # Encoding images and rendering megabytes of base64 JSON take milliseconds: not on the event loop.
        content = await asyncio.to_thread(images_response, result, params, self.references)
        headers = image_headers(target, result, Clock(arrived, parsed, returned, time.time()))
        return Response(content, media_type="application/json", headers=headers)

    async def _stream(
        self, target: Route, image_request: ImageRequest, params: ImageParams, event_prefix: str
    ) -> StreamingResponse:
        """Server-sent events in the OpenAI Images streaming shape, plus a ``.progress`` event a step."""
        name = target.model.served_name
        events = await self.models.stream(target, image_request, params.partial_images or 0, self.config.limits)

        def count_images(result: ImageResult) -> None:  # a stream's images count once it completes
            self.metrics.images_out(name, len(result.images))

        headers = stream_headers(target, image_request)
        return event_stream(events, params, event_prefix, headers, self.references, count_images)
