"""The cluster tests' marker and figures: each test names its scenario, which runs in the background
(tests/cluster/background.py), and waits for that scenario's figures."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cluster.background import SCENARIOS, stop_scenarios
from tests.cluster.simulation import REPO

ARTIFACTS = REPO / "test-artifacts"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(name): the test checks the figures of this cluster scenario")


def pytest_sessionfinish(session: pytest.Session) -> None:
    stop_scenarios(session)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The figures of the test's ``scenario`` marker, once that scenario has run; printed and written to
    test-artifacts/cluster.json."""
    (mark,) = request.node.iter_markers("scenario")
    name = mark.args[0]
    figures = request.config.stash[SCENARIOS].figures(name)
    print(f"\n{name}: {json.dumps(figures)}")
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "cluster.json"
    recorded = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**recorded, name: figures}, indent=2))
    return figures
