"""The rules of the house, read from the code: no import cycles, an engine that knows neither Ray nor HTTP, an
ingress.py of routes only, and a wire package (deployments/openai/) that needs no Serve cluster."""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "deployments"
TRANSPORT_MODULES = ("ray", "fastapi", "starlette", "httpx", "http", "aiohttp", "uvicorn")
NOT_FOR_THE_ENGINE = (
    "deployments.ingress",
    "deployments.server",
    "deployments.cp_server",
    "deployments.app",
    "deployments.openai",
    "deployments.auth",
    "deployments.metrics",
    "deployments.replicas",
)
HTTP_NOTIONS = re.compile(
    r"ServiceError|status_code|Retry-After|\bstatus=\d|HTTP \d{3}|\b(?:40[0-9]|41[0-9]|50[0-9])\b"
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (imports inside functions count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {name: {dep for dep in imports_of(path) if dep in MODULES and dep != name} for name, path in MODULES.items()}


def test_no_module_imports_in_a_cycle() -> None:
    cycles = []

    def visit(name: str, stack: list[str]) -> None:
        for dep in GRAPH[name]:
            if dep in stack:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in done:
                visit(dep, [*stack, dep])
        done.add(name)

    done: set[str] = set()
    for name in sorted(GRAPH):
        if name not in done:
            visit(name, [name])
    # A package importing its own submodule (``__init__`` re-exports) is no cycle of the code.
    cycles = [
        c for c in cycles if not any(a.startswith(b + ".") or b.startswith(a + ".") for a, b in itertools.pairwise(c))
    ]
    assert not cycles, cycles


def test_the_engine_imports_neither_ray_nor_any_http_layer() -> None:
    engine = {name: path for name, path in MODULES.items() if name.startswith("deployments.engine")}
    assert len(engine) > 10
    for name, path in engine.items():
        for dep in imports_of(path):
            top = dep.split(".")[0]
            assert top not in TRANSPORT_MODULES, f"{name} imports {dep}"
            assert not dep.startswith(NOT_FOR_THE_ENGINE), f"{name} imports {dep}"


def test_the_engine_speaks_no_http() -> None:
    """No status codes, headers or HTTP errors in the engine: its errors carry a parameter and a code."""
    for path in (PACKAGE / "engine").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            assert not HTTP_NOTIONS.search(code), f"{path.name}:{number}: {line.strip()}"


def test_only_the_ingress_layer_chooses_statuses() -> None:
    """The status table (openai/errors.py) and the routes that answer without an error (ingress.py)."""
    for name, path in MODULES.items():
        if name not in ("deployments.ingress", "deployments.openai.errors"):
            assert "status_code" not in path.read_text(), name


def test_ingress_py_holds_the_app_its_routes_and_the_deployment() -> None:
    """At module level: imports, the logger, the app (its OpenAPI hook and exception handlers) and the one
    deployment class. Each other job has a module of its own, which the next test names."""
    source = MODULES["deployments.ingress"].read_text()
    tree = ast.parse(source)
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    assert [ast.unparse(d) for c in classes for d in c.decorator_list] == ["serve.ingress(app)"]
    for node in tree.body[1:]:  # after the docstring
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            decorators = [ast.unparse(d) for d in node.decorator_list]
            assert decorators and all(d.startswith("app.") for d in decorators), f"helper {node.name} in ingress.py"
        elif isinstance(node, ast.Assign):
            targets = [ast.unparse(t) for t in node.targets]
            assert targets in (["logger"], ["app"], ["app.openapi"]), f"{targets} belongs in the module of its job"
        else:
            assert isinstance(node, (ast.Import, ast.ImportFrom, ast.ClassDef)), ast.unparse(node)[:80]
    assert len(source.splitlines()) < 300


# Each HTTP job of the ingress layer, by a name or string only its code uses, and the one module that does it.
HOMES = {
    "STATUS": "deployments.openai.errors",  # error class -> status, feeding OpenAPI too
    "Retry-After": "deployments.openai.errors",  # the headers of an error response
    "MultiPartParser": "deployments.openai.multipart",  # the edit form
    "text/event-stream": "deployments.openai.sse",  # SSE framing and its payloads
    "stream_payloads": "deployments.openai.sse",
    "server-timing": "deployments.openai.headers",  # what ran, where the time went
    "body_timeout": "deployments.request_body",  # a body read within its deadline
    "STATIC_FILES": "deployments.playground",  # the page's files, listed once
    "RayTaskError": "deployments.handles",  # Ray's errors become the service's
    "models_json_schema": "deployments.openai.openapi",  # the request bodies of the OpenAPI document
}


def words_of(path: Path) -> set[str]:
    """The names and string constants of a module's code: docstrings and comments left out."""
    tree = ast.parse(path.read_text())
    bodies = [node.body for node in ast.walk(tree) if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))]
    bodies += [node.body for node in ast.walk(tree) if isinstance(node, ast.AsyncFunctionDef)]
    docstrings = {id(body[0].value) for body in bodies if body and isinstance(body[0], ast.Expr)}
    words = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.add(node.value)
        elif isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, ast.alias):
            words.add(node.name.rsplit(".", 1)[-1])
    return words


def test_each_http_job_has_one_home() -> None:
    words = {name: words_of(path) for name, path in MODULES.items()}
    for marker, home in HOMES.items():
        assert {name for name, found in words.items() if marker in found} == {home}, marker


# What the wire package may import from the transport: the wire format needs no Serve cluster and no app, so
# deployments/openai/ imports neither Ray nor FastAPI; Starlette only where a module speaks HTTP itself.
STARLETTE_USERS = {
    "deployments.openai.errors": "the error response",
    "deployments.openai.multipart": "Starlette's multipart parser",
    "deployments.openai.sse": "the streaming response",
}


def test_the_wire_package_imports_neither_ray_nor_fastapi() -> None:
    wire = {name: path for name, path in MODULES.items() if name.startswith("deployments.openai")}
    assert set(STARLETTE_USERS) < set(wire)
    for name, path in wire.items():
        for dep in imports_of(path):
            top = dep.split(".")[0]
            assert top not in ("ray", "fastapi", "uvicorn"), f"{name} imports {dep}"
            assert top != "starlette" or name in STARLETTE_USERS, f"{name} imports {dep}"
            assert not dep.startswith(("deployments.ingress", "deployments.handles", "deployments.server")), dep
