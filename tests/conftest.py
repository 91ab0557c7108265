"""Shared fixtures: one local Ray for the whole run, and the apps the suites reach over real HTTP.

The run has two lanes. ``bash scripts/test`` runs them side by side (pytest-xdist, two workers, ``--dist
loadgroup``): tests marked ``background`` in one worker at the idle scheduling class, every other test, in order,
in the other. The background tests compile inductor graphs: CPU-bound, Ray-free, no time checked. They take the
CPU that the main lane leaves free (the suites over HTTP wait on replicas and timers for about 40 % of their run),
and yield it whenever a test that checks a time needs it. Without xdist, both lanes run in order in one process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
import yaml

from deployments.engine.parallel import free_port
from tests.cluster.background import start_scenarios
from tests.helpers import BATCH_CONFIG, PROD_CONFIG, REPO, TEST_CONFIG, TIGHT_CONFIG, TIMEOUT_CONFIG, served_app

BACKGROUND = "background"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{BACKGROUND}: CPU-bound, Ray-free, no time checked: runs in the idle lane")
    # One intra-op thread in every process of the run: this one and those it starts (Ray's workers, which keep
    # a value set here, the scenarios' clusters, rank processes, inductor's compile workers). The tiny models gain
    # nothing from threads, and OpenMP threads spinning at their barriers on two cores shared by a dozen
    # processes slowed the unit tests up to sevenfold while the cluster scenarios ran.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)  # this process loaded torch before the variable was set


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the groups into work units
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.xdist_group(BACKGROUND if item.get_closest_marker(BACKGROUND) else "main"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not item.get_closest_marker(BACKGROUND):
        start_scenarios(item.session)  # from the main lane's first test on, in the process that runs that lane
    elif os.environ.get("PYTEST_XDIST_WORKER"):
        # This worker runs only the background lane. Inductor's compile workers and compilers start later, in
        # the tests, and inherit the class.
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One inductor cache for the run's compiles, as a replica's compile_cache_dir is across restarts: a graph
    that two tests compile (the tiny models share their VAE, and the adapter test's blocks with their slots off
    are the base model's) is built once."""
    return tmp_path_factory.mktemp("compile-cache")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[dict[str, int]]:
    """One local Ray for the whole run. 8 fake GPUs, so the num_gpus=1 replicas of every app the suites start
    (the context-parallel one takes 2, the autoscaled one up to 3) schedule on a CPU machine."""
    import ray
    from ray import serve

    ports = {"http": free_port(), "metrics": free_port()}
    ray.init(
        num_cpus=4,
        num_gpus=8,
        include_dashboard=False,
        log_to_driver=False,
        _metrics_export_port=ports["metrics"],
        _system_config={"metrics_report_interval_ms": 1000},
    )
    # The quick start's proxy options (keep-alive bound), on a free port of this machine's loopback.
    quick_start = yaml.safe_load((REPO / "serve_config.yaml").read_text())["http_options"]
    serve.start(http_options={**quick_start, "host": "127.0.0.1", "port": ports["http"]})
    yield ports
    ray.shutdown()  # stops the cluster ray.init started, Serve's controller and replicas with it


@pytest.fixture(scope="session")
def base_url(ray_cluster: dict[str, int]) -> Iterator[str]:
    """The tiny dev and klein models, open API, at the root."""
    with served_app(TEST_CONFIG, "flux2", "/", ray_cluster["http"]) as url:
        yield url


# Apps of more than one module live for the session; those of one module only while it runs.
@pytest.fixture(scope="session")
def prod_url(ray_cluster: dict[str, int]) -> Iterator[str]:
    with served_app(PROD_CONFIG, "prod", "/prod", ray_cluster["http"]) as url:
        yield url


@pytest.fixture(scope="session")
def tight_url(ray_cluster: dict[str, int]) -> Iterator[str]:
    with served_app(TIGHT_CONFIG, "tight", "/tight", ray_cluster["http"]) as url:
        yield url


@pytest.fixture(scope="module")
def batch_url(ray_cluster: dict[str, int]) -> Iterator[str]:
    with served_app(BATCH_CONFIG, "batch", "/batch", ray_cluster["http"]) as url:
        yield url


@pytest.fixture(scope="module")
def timeout_url(ray_cluster: dict[str, int]) -> Iterator[str]:
    with served_app(TIMEOUT_CONFIG, "timeout", "/timeout", ray_cluster["http"]) as url:
        yield url


@pytest.fixture(scope="session")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=120) as http:
        yield http
