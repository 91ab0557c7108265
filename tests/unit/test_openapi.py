"""The finished ``/openapi.json``: every operation has an id of its own, the same in every process (OpenAPI requires
unique ids; client generators name their methods by them), and the bodies the routes read themselves are declared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

from deployments.ingress import app
from tests.helpers import REPO

DUMP = "import json; from deployments.ingress import app; print(json.dumps(app.openapi(), sort_keys=True))"


def operation_ids(document: dict) -> list[str]:
    return [operation["operationId"] for operations in document["paths"].values() for operation in operations.values()]


def test_every_operation_has_an_id_of_its_own_and_fastapi_warns_of_none() -> None:
    app.openapi_schema = None  # build it here, watching FastAPI's warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        document = app.openapi()
    ids = operation_ids(document)
    assert len(ids) == len(set(ids)) > 0, ids
    readyz = document["paths"]["/readyz"]
    assert (readyz["get"]["operationId"], readyz["head"]["operationId"]) == ("readyz_readyz_get", "readyz_readyz_head")


def dumped(hash_seed: int) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed), "PYTHONPATH": str(REPO)}
    dump = subprocess.run([sys.executable, "-c", DUMP], env=env, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(dump.stdout)


def test_the_document_is_the_same_in_every_process() -> None:
    """A GET + HEAD route's methods are a set, whose order changes with the hash seed: seeds 0 and 3 order
    {GET, HEAD} differently, and FastAPI names both operation ids and inferred response schemas after the first."""
    here = json.loads(json.dumps(app.openapi(), sort_keys=True))
    assert dumped(0) == dumped(3) == here


def test_the_image_routes_declare_the_bodies_they_read_themselves() -> None:
    document = app.openapi()
    generation = document["paths"]["/v1/images/generations"]["post"]["requestBody"]["content"]
    edit = document["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]
    schemas = document["components"]["schemas"]
    assert generation["application/json"]["schema"]["$ref"].rsplit("/", 1)[1] in schemas
    assert {"image", "image[]", "mask", "prompt"} <= set(schemas["ImageEditRequestForm"]["properties"])
    assert edit["multipart/form-data"]["schema"]["$ref"].endswith("ImageEditRequestForm")
