"""Typed request and response models of the OpenAI Images API, as this server speaks it.

The models are the contract: the routes validate with them and ``/openapi.json`` is generated from
them. JSON bodies are validated strictly (``"n": true`` or ``"stream": "yes"`` are type errors, as in
the OpenAI API); multipart form fields arrive as text and are converted, with booleans spelled
``true`` / ``false`` only.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo

from deployments.errors import InvalidRequest

MAX_SEED = 2**62


def _form_bool(value: Any, info: ValidationInfo) -> Any:
    """Form fields are text: accept exactly ``true`` / ``false`` there (not pydantic's lax ``yes``, ``on``, ``1``)."""
    if info.mode == "python" and isinstance(value, str):
        spelled = value.strip().lower()
        if spelled not in ("true", "false"):
            raise ValueError("must be true or false")
        return spelled == "true"
    return value


StrictFormBool = Annotated[bool, BeforeValidator(_form_bool)]


class AdapterRef(BaseModel):
    """One LoRA adapter of the request's model, by name, at a strength (default: the adapter's configured one)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(max_length=64)
    scale: float | None = Field(default=None, allow_inf_nan=False)


class ImageParams(BaseModel):
    """Fields shared by ``/v1/images/generations`` and ``/v1/images/edits``.

    Standard OpenAI fields, plus the extensions ``seed``, ``num_inference_steps``, ``guidance_scale`` and
    ``step_cache``. OpenAI fields that FLUX.2 has no use for (``quality``, ``moderation``, ``user``,
    ``input_fidelity``) are accepted and ignored; unknown fields are rejected.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(description="what to generate, or how to change the reference images")
    model: str | None = Field(default=None, description="a served model id (GET /v1/models); default: the first")
    n: int = Field(default=1, ge=1, description="images to return; image i uses seed + i")
    size: str | None = Field(default="auto", description="WIDTHxHEIGHT in multiples of 16, or auto")
    output_format: Literal["png", "jpeg", "webp"] = "png"
    output_compression: int | None = Field(default=None, ge=0, le=100)
    response_format: Literal["b64_json", "url"] | None = Field(default=None, description="only b64_json is served")
    background: Literal["auto", "opaque", "transparent"] | None = None
    stream: StrictFormBool = Field(default=False, description="server-sent events: progress, previews, the result")
    partial_images: int | None = Field(default=None, ge=0, le=3, description="previews while streaming")
    quality: str | None = None
    moderation: str | None = None
    user: str | None = None
    input_fidelity: str | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="default: a fresh random seed")
    num_inference_steps: int | None = Field(default=None, ge=1, description="default: the model's")
    guidance_scale: float | None = Field(default=None, ge=0.0, allow_inf_nan=False, description="default: the model's")
    step_cache: StrictFormBool | None = Field(default=None, description="false: run this request without step caching")
    lora: list[AdapterRef] | None = Field(
        default=None,
        max_length=8,
        description="LoRA adapters to stack, beside one named in model as <model>/<adapter>; multipart: repeat "
        "lora[][name] (and lora[][scale], one for every name)",
    )


class ImageGenerationRequest(ImageParams):
    """``POST /v1/images/generations``: a JSON body."""


class ImageEditRequest(ImageParams):
    """``POST /v1/images/edits``: the text fields of the multipart form, beside the ``image`` files and ``mask``."""


def _describe(error: dict[str, Any]) -> tuple[str, str]:
    """(param, message) of an error inside the body; a nested object of the wrong type (``"lora": ["x"]``)
    is a bad value of that field, not a bad body."""
    param = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return param, f"Unknown parameter: '{param}'."
    if error["type"] == "missing":
        return param, f"Missing required parameter: '{param}'."
    return param, f"Invalid value for '{param}': {error['msg']}."


def _invalid(exc: ValidationError) -> InvalidRequest:
    error = exc.errors(include_url=False)[0]
    if not error["loc"]:  # the body itself: not JSON, or JSON that is not an object
        return InvalidRequest(f"Request body must be a JSON object: {error['msg']}.", param=None, code="invalid_json")
    param, message = _describe(error)
    return InvalidRequest(message, param=param, code="invalid_value")


def parse_json_body(body: bytes) -> ImageGenerationRequest:
    """A generation request from its raw JSON body (any nesting depth, any bytes: a 400, never a crash)."""
    try:
        return ImageGenerationRequest.model_validate_json(body)
    except ValidationError as exc:
        raise _invalid(exc) from None


def parse_form_fields(fields: dict[str, Any]) -> ImageEditRequest:
    """An edit request from its multipart text fields (numbers and booleans arrive as text)."""
    try:
        return ImageEditRequest.model_validate(fields, strict=False)
    except ValidationError as exc:
        raise _invalid(exc) from None


class ImageData(BaseModel):
    b64_json: str


class ImagesResponse(BaseModel):
    """The OpenAI ImagesResponse (``data[i].b64_json``), with the output format and size."""

    created: int
    output_format: Literal["png", "jpeg", "webp"]
    size: str
    data: list[ImageData]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The one error shape every route answers with."""

    error: ErrorBody


class Health(BaseModel):
    """``/healthz``: the ingress answers, which is all liveness means."""

    status: Literal["ok"] = "ok"


class ShapeCard(BaseModel):
    width: int
    height: int
    references: int


class ModelLimits(BaseModel):
    """What a client may ask of this model; the playground builds its controls from these."""

    max_n: int
    max_reference_images: int
    min_side: int
    max_side: int
    max_output_pixels: int
    max_prompt_chars: int
    max_steps: int


class ModelAdapters(BaseModel):
    """The LoRA adapters a request may name on this model (``lora``, or ``<model>/<adapter>`` as its model)."""

    adapters: list[str]
    max_per_request: int
    max_scale: float


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models``: the OpenAI model object plus what this server knows of the model.

    ``family``, ``default_steps``, ``default_guidance_scale`` and the extra fields (the replica's ``ModelInfo``)
    come from a running replica and are absent or null until one has described itself.
    """

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "flux2-serve"
    parent: str | None = None
    streaming: bool = True
    weights: str = Field(description="pretrained | random-tiny | random-full")
    is_demo: bool = Field(description="random weights: the images are noise")
    default_size: str
    warmup_shapes: list[ShapeCard] = Field(description="sizes served without compiling: the fastest")
    limits: ModelLimits
    family: str | None = None
    default_steps: int | None = None
    default_guidance_scale: float | None = None
    lora: ModelAdapters
    adapter: str | None = Field(
        default=None, exclude_if=lambda name: name is None, description="an adapter's own model: its name"
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
