"""The cluster scenarios, run in the background one after another from the first test of the run's main lane on
(tests/conftest.py): beside the Ray-free suites that pyproject's testpaths put first. Each test of test_cluster.py
waits for its scenario's figures (tests/cluster/conftest.py).

Why: a scenario spends much of its minutes waiting on Ray's and Serve's timers (autoscaler passes, delays, drains,
idle timeouts) and on its load, which takes whatever CPU is free; run first and alone, they took 7 of the run's
22 minutes on the two-core machine. Never two at once: four scenarios side by side drove the load to 119.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.cluster.simulation import ScenarioProcess

SCENARIO_TIMEOUT_S = 480  # each took 1-3 minutes on two busy cores
SCENARIOS = pytest.StashKey["BackgroundScenarios | None"]()


class BackgroundScenarios:
    """Runs the named scenarios in order on a thread of its own; ``figures(name)`` waits for one's result."""

    def __init__(self, names: list[str]):
        self._results: dict[str, dict[str, Any] | BaseException] = {}
        self._done = {name: threading.Event() for name in names}
        self._lock = threading.Lock()
        self._stopping = False
        self._current: ScenarioProcess | None = None
        self._thread = threading.Thread(target=self._run, args=(names,), name="cluster-scenarios", daemon=True)
        self._thread.start()

    def _run(self, names: list[str]) -> None:
        for name in names:
            with self._lock:
                if self._stopping:
                    return
                self._current = ScenarioProcess(name)
            try:
                self._results[name] = self._current.figures(SCENARIO_TIMEOUT_S)
            except BaseException as exc:  # handed to the test that waits for it
                self._results[name] = exc
            finally:
                self._done[name].set()

    def figures(self, name: str) -> dict[str, Any]:
        self._done[name].wait()
        result = self._results[name]
        if isinstance(result, BaseException):
            raise result
        return result

    def stop(self) -> None:
        """Kill the running scenario (a session that ends early) and start no other."""
        with self._lock:
            self._stopping = True
            current = self._current
        if current is not None:
            current.kill()
        self._thread.join()


def start_scenarios(session: pytest.Session) -> None:
    """Start the scenarios that the session's tests check, once (none: nothing to start)."""
    if SCENARIOS in session.config.stash:
        return
    names = [mark.args[0] for item in session.items for mark in item.iter_markers("scenario")]
    session.config.stash[SCENARIOS] = BackgroundScenarios(list(dict.fromkeys(names))) if names else None


def stop_scenarios(session: pytest.Session) -> None:
    if scenarios := session.config.stash.get(SCENARIOS, None):
        scenarios.stop()
