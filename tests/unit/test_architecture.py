"""The rules of the house, read from the code: no import cycles, an engine that knows neither Ray nor HTTP, an
ingress.py of routes only, a wire package (deployments/openai/) that needs no Serve cluster, the type rule of
deployments/__init__.py (the config describes, the serving layer resolves once), names that say what a module
holds, servers composed rather than overriding each other's private steps, and an app that builds without the
engine's libraries."""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

from tests.helpers import packages_loaded_by

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


# --- the type rule (deployments/__init__.py): the config describes, the serving layer resolves once, the engine runs


def test_the_config_describes_and_imports_no_other_module_of_the_package() -> None:
    """config.py is the operator's: it resolves no request, so it needs no request error, no wire and no types."""
    package = {dep for dep in imports_of(MODULES["deployments.config"]) if dep.startswith("deployments")}
    assert not package, package


def test_internal_types_import_only_the_config() -> None:
    """types.py crosses the handle: no Ray, torch or HTTP, and nothing of the wire or the servers."""
    for dep in imports_of(MODULES["deployments.types"]):
        assert dep.split(".")[0] not in (*TRANSPORT_MODULES, "torch"), dep
        assert not dep.startswith("deployments") or dep.startswith("deployments.config"), dep


def pydantic_models() -> dict[str, str]:
    """Each class of the package deriving from pydantic's BaseModel, directly or through another such class of the
    package (``class X(ModelCard)``), and the module defining it."""
    classes = [
        (name, node)
        for name, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
    ]
    models: dict[str, str] = {}
    for _ in classes:  # a base may be met after its subclass
        for name, node in classes:
            if any(ast.unparse(base).rsplit(".", 1)[-1] in {"BaseModel", *models} for base in node.bases):
                models[node.name] = name
    return models


def test_pydantic_models_are_the_wire_s_or_the_operator_s() -> None:
    """Validated shapes are what a client or an operator writes; internal values are plain dataclasses."""
    holders = set(pydantic_models().values())
    assert holders == {"deployments.openai.protocol", "deployments.config"}, holders


def calls_of(path: Path) -> set[str]:
    """The names a module calls (``f(...)``, ``obj.f(...)``): what it builds and runs, not what it only mentions."""
    calls = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            calls.add(ast.unparse(node.func).rsplit(".", 1)[-1])
    return calls


def test_a_request_s_adapters_are_resolved_once_in_the_serving_layer() -> None:
    """Only openai/routing.py makes an AdapterStack from what a request named (and types.py defines it): the engine
    and the servers take the stack as given, never look names up or fill in default scales themselves."""
    makers = {name for name, path in MODULES.items() if {"AdapterStack", "resolve_adapters"} & calls_of(path)}
    assert makers == {"deployments.openai.routing"}, makers


# --- names that say what they hold, servers that compose


def methods_of(tree: ast.Module) -> dict[str, set[str]]:
    """Each class of a module and the methods its body defines."""
    return {
        node.name: {item.name for item in node.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }


def test_no_module_is_named_for_a_step_of_its_class_or_for_the_product() -> None:
    """engine/generate.py held the engine class and engine/flux2.py the pipeline call: a module is named for
    what it holds, not for one method of its class, nor for FLUX.2, which every module here is about."""
    for name, path in MODULES.items():
        stem = path.stem
        assert stem not in ("flux2", "flux"), f"{name}: every module is FLUX.2's; name what this one holds"
        methods = set().union(*methods_of(ast.parse(path.read_text())).values())
        assert stem not in methods, f"{name} is named for its class's method {stem}(): name the class's job"


def test_deployment_classes_compose_instead_of_overriding_private_steps() -> None:
    """A server class outside the engine may extend one of another module (its own Serve options, its constructor),
    never redefine that class's private methods: what it changes is passed in (an EngineHost), so the base's
    internals are no contract. The engine's context-parallel engine is the engine's own business."""
    classes = {}
    for name, path in MODULES.items():
        for cls, methods in methods_of(ast.parse(path.read_text())).items():
            classes[cls] = (name, methods)
    for name, path in MODULES.items():
        if name.startswith("deployments.engine"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            own = classes[node.name][1]
            for base in (ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases):
                if base in classes and classes[base][0] != name:
                    private = {m for m in own & classes[base][1] if m.startswith("_") and not m.startswith("__")}
                    assert not private, f"{node.name} ({name}) overrides {base}'s {sorted(private)}"


def test_building_the_app_imports_no_engine_library() -> None:
    """Every ``serve deploy`` builds the app in a fresh process: with torch and diffusers imported by the server
    modules, each rollout of tests/cluster waited seconds more (7 s on an idle two-core machine) before it began.
    The replicas import them when they create their engine."""
    heavy = {"torch", "diffusers", "transformers", "peft", "accelerate"} & packages_loaded_by(["deployments.app"])
    assert not heavy, f"importing deployments.app loads {sorted(heavy)}"
