"""The edit route's multipart form, parsed from the body already read: text fields, reference images, mask.

Parsing is bounded (files, text fields, the size of a part), and every field is taken once except the repeated
ones: ``image[]`` and the ``lora[][name]`` / ``lora[][scale]`` pairs the openai client flattens ``lora`` into,
rebuilt here as the list a JSON body carries. The text fields are validated by ``protocol.parse_form_fields``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser

from deployments.config import Limits
from deployments.errors import InvalidRequest

IMAGE_FIELDS = ("image", "image[]")
MASK_FIELD = "mask"
ADAPTER_NAME_FIELD, ADAPTER_SCALE_FIELD = "lora[][name]", "lora[][scale]"
MAX_TEXT_FIELDS = 64
EXTRA_FILES = 8  # beyond the references: room for the mask and stray files, which are then refused by name

EditForm = tuple[dict[str, Any], list[bytes], bytes | None]  # text fields, reference images, mask


async def parse_edit_form(body: bytes, content_type: str, limits: Limits) -> EditForm:
    """(text fields, reference images in order, mask) of a multipart body; a malformed or oversized form, a file
    where text belongs or a field sent twice is a 400."""
    parser = MultiPartParser(
        Headers({"content-type": content_type}),
        _chunks(body),
        max_files=limits.max_reference_images + EXTRA_FILES,
        max_fields=MAX_TEXT_FIELDS,
        max_part_size=limits.max_body_bytes,
    )
    try:
        form = await parser.parse()
    except Exception as exc:  # malformed multipart, too many parts: on hostile bytes more than its own exception
        raise InvalidRequest(f"could not parse multipart form: {exc}", code="invalid_multipart") from None
    fields: dict[str, Any] = {}
    images: list[bytes] = []
    mask: bytes | None = None
    adapter_fields: dict[str, list[str]] = {ADAPTER_NAME_FIELD: [], ADAPTER_SCALE_FIELD: []}
    try:
        for key, value in form.multi_items():
            if key in adapter_fields and isinstance(value, str):  # repeated by design: one a LoRA adapter
                adapter_fields[key].append(value)
            elif key in IMAGE_FIELDS or key == MASK_FIELD:
                data = await value.read() if isinstance(value, UploadFile) else value.encode()
                if key == MASK_FIELD and mask is not None:
                    raise InvalidRequest("field 'mask' was sent more than once", param="mask", code="invalid_value")
                if key == MASK_FIELD:
                    mask = data
                else:
                    images.append(data)
            elif isinstance(value, UploadFile):
                raise InvalidRequest(f"unexpected file field '{key}'", param=key, code="invalid_value")
            elif key in fields:
                raise InvalidRequest(f"field '{key}' was sent more than once", param=key, code="invalid_value")
            else:
                fields[key] = value
    finally:
        await form.close()
    if adapter_fields[ADAPTER_NAME_FIELD] or adapter_fields[ADAPTER_SCALE_FIELD]:
        if "lora" in fields:
            raise InvalidRequest("send lora as lora[][name] fields only", param="lora", code="invalid_value")
        fields["lora"] = form_adapters(adapter_fields[ADAPTER_NAME_FIELD], adapter_fields[ADAPTER_SCALE_FIELD])
    return fields, images, mask


def form_adapters(names: list[str], scales: list[str]) -> list[dict[str, str]]:
    """``lora`` from multipart's ``lora[][name]`` / ``lora[][scale]`` fields, as the openai client flattens a list
    of objects: the scales pair with the names by order, so there must be one for every name or none."""
    if scales and len(scales) != len(names):
        raise InvalidRequest(
            f"{len(names)} lora[][name] but {len(scales)} lora[][scale] fields: give a scale for every adapter or "
            "for none",
            param="lora",
            code="invalid_value",
        )
    if not scales:
        return [{"name": name} for name in names]
    return [{"name": name, "scale": scale} for name, scale in zip(names, scales, strict=True)]


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    """The body as the parser reads a request's stream: it was read (and bounded) before."""
    yield body
