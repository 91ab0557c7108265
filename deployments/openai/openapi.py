"""``/openapi.json`` as FastAPI leaves it unfinished: the request bodies, and one operation id per operation.

The image routes read their bodies themselves, to bound them while they arrive, so FastAPI sees no body model:
each route names its body here (``json_body``, ``multipart_body``) and ``with_request_schemas`` adds the models
to the document's components. The error responses come from the status table (``openai.errors``). A route of
GET and HEAD is one FastAPI route with one id, named after whichever method its set yields first (it changes from
process to process): ``unique_operation_ids`` gives each method its own.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from deployments.openai.protocol import ImageEditRequest, ImageGenerationRequest

REF_TEMPLATE = "#/components/schemas/{model}"


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """A route's ``openapi_extra``: a required JSON body of ``model``."""
    schema = {"$ref": REF_TEMPLATE.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def multipart_body(model: type[BaseModel]) -> dict[str, Any]:
    """A route's ``openapi_extra``: a required multipart form, ``model``'s text fields beside the files."""
    schema = {"$ref": REF_TEMPLATE.format(model=f"{model.__name__}Form")}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def multipart_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The multipart form of an edit: the model's text fields plus the image and mask files."""
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    binary = {"type": "string", "format": "binary"}
    schema["properties"] = {
        "image": {**binary, "description": "the image to edit (or use image[] for several references)"},
        "image[]": {"type": "array", "items": binary, "description": "reference images; the first is edited"},
        "mask": {**binary, "description": "PNG with alpha, the first image's size; alpha 0 marks what may change"},
        **schema["properties"],
    }
    return schema


def with_request_schemas(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (FastAPI's document, changed in place) with the models the bodies above refer to."""
    _, defs = models_json_schema([(ImageGenerationRequest, "validation")], ref_template=REF_TEMPLATE)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(defs.get("$defs", {}))
    components[f"{ImageEditRequest.__name__}Form"] = multipart_schema(ImageEditRequest)
    return schema


def unique_operation_ids(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (changed in place) with ``<id>_<method>`` for every operation of a path of several methods, the id
    stripped of FastAPI's own method suffix, so each id is unique and the same in every process."""
    for operations in schema.get("paths", {}).values():
        if len(operations) > 1:
            for method, operation in operations.items():
                base = re.sub(r"_(get|head|post|put|patch|delete|options)$", "", operation["operationId"])
                operation["operationId"] = f"{base}_{method}"
    return schema


def document(build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The finished document: ``build()`` (FastAPI's, which warns of the ids its GET + HEAD routes share), the
    request schemas added and the operation ids made unique."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Duplicate Operation ID")
        schema = build()
    return with_request_schemas(unique_operation_ids(schema))
