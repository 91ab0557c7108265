"""The rules of the house, read from the code: no import cycles, and an engine that knows neither Ray nor HTTP."""

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


def test_only_the_ingress_chooses_statuses() -> None:
    for name, path in MODULES.items():
        if name != "deployments.ingress":
            assert "status_code" not in path.read_text(), name
