"""bench/__init__.py's layout, read from the code: each suite a module of bench/suites/ that imports no other suite,
and bench/lib/, what they share, importing no suite and no torch at import time."""

from __future__ import annotations

import ast
from pathlib import Path

from bench.__main__ import SUITES, suite_module
from tests.helpers import REPO, packages_loaded_by

SUITES_DIR = REPO / "bench" / "suites"
LIB_DIR = REPO / "bench" / "lib"


def bench_imports(path: Path) -> set[str]:
    """The bench modules ``path`` imports, anywhere in it: suites import most of what they need inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return {name for name in names if name.split(".")[0] == "bench"}


def suite_of(path: Path) -> str:
    """The suite a file of bench/suites/ belongs to: ``bench.suites.engine`` for engine.py, and for every module of
    the eval package ``bench.suites.eval``."""
    return f"bench.suites.{path.relative_to(SUITES_DIR).parts[0].removesuffix('.py')}"


SUITE_FILES = [path for path in SUITES_DIR.rglob("*.py") if path != SUITES_DIR / "__init__.py"]


def test_every_file_of_bench_suites_belongs_to_a_suite_of_the_cli() -> None:
    """No helper hides among the suites: each module or package there is one that ``python -m bench`` runs."""
    runs = {suite_module(name).removesuffix(".__main__") for name in SUITES}
    assert {suite_of(path) for path in SUITE_FILES} == runs


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


def test_a_suite_imports_the_shared_modules_and_its_own_package_only() -> None:
    assert SUITE_FILES
    for path in SUITE_FILES:
        suite = suite_of(path)
        for name in bench_imports(path):
            assert within(name, "bench.lib") or within(name, suite), f"{path.name} ({suite}) imports {name}"


def test_the_shared_modules_import_no_suite_and_no_torch() -> None:
    for path in LIB_DIR.glob("*.py"):
        outside = sorted(name for name in bench_imports(path) if not within(name, "bench.lib"))
        assert not outside, f"{path.name} imports {outside}"
    modules = [f"bench.lib.{path.stem}" for path in LIB_DIR.glob("*.py") if path.stem != "__init__"]
    assert "torch" not in packages_loaded_by(modules)
