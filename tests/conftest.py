"""Shared fixtures: one local Ray for the whole run, and the apps the suites reach over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import yaml

from deployments.engine.parallel import free_port
from tests.helpers import BATCH_CONFIG, PROD_CONFIG, REPO, TEST_CONFIG, TIGHT_CONFIG, TIMEOUT_CONFIG, served_app


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a small shared CPU, more threads than free cores only slow the tiny models down."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
