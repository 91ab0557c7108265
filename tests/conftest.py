"""Shared fixtures: one real Ray Serve deployment of the tiny models, reached over real HTTP."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from deployments.engine.parallel import free_port

TEST_LIMITS = {
    "max_body_bytes": 2 * 1024 * 1024,
    "max_reference_images": 4,
    "max_side": 512,
    "max_output_pixels": 512 * 512,
    "max_prompt_chars": 500,
    "max_steps": 20,
    "max_n": 4,
}
TEST_CONFIG = {
    "models": [
        {
            "name": "tiny-dev",
            "source": "tiny-dev",
            "warmup_shapes": [{"width": 64, "height": 64, "references": 1}],
            "default_size": [64, 64],
        },
        {
            "name": "tiny-klein",
            "source": "tiny-klein",
            "warmup_shapes": [{"width": 64, "height": 64, "references": 0}],
            "default_size": [64, 64],
        },
    ],
    "limits": TEST_LIMITS,
}


API_KEYS = ["test-key-1", "test-key-2"]


def production_model(**deployment_options: object) -> dict:
    """The production graph shape on CPU: num_gpus=1 replicas (Ray is given fake GPUs), tiny weights."""
    return {
        "name": "flux2",
        "source": "tiny-dev",
        "warmup_shapes": [{"width": 64, "height": 64, "references": 0}],
        "default_size": [64, 64],
        "deployment_options": {"ray_actor_options": {"num_gpus": 1, "num_cpus": 0.1}, **deployment_options},
    }


# Autoscaled 1 -> 3 replicas on ongoing requests, API keys required.
PROD_CONFIG = {
    "models": [
        production_model(
            max_ongoing_requests=1,
            max_queued_requests=32,
            autoscaling_config={
                "min_replicas": 1,
                "max_replicas": 3,
                "target_ongoing_requests": 1,
                "upscale_delay_s": 0.5,
                "downscale_delay_s": 3,
                "look_back_period_s": 2,
                "metrics_interval_s": 0.5,
            },
        )
    ],
    "limits": {**TEST_LIMITS, "max_side": 1024, "max_output_pixels": 1024 * 1024},
    "auth": {"api_keys": API_KEYS},
    "ingress_options": {"ray_actor_options": {"num_cpus": 0.1}},
}
# One replica, one request at a time, two queued: for backpressure and replica faults.
TIGHT_CONFIG = {
    "models": [production_model(num_replicas=1, max_ongoing_requests=1, max_queued_requests=2)],
    "limits": {**TEST_LIMITS, "max_side": 1024, "max_output_pixels": 1024 * 1024},
    "ingress_options": {"ray_actor_options": {"num_cpus": 0.1}},
}


# Text-to-image requests arriving together share a pipeline call.
BATCH_CONFIG = {
    "models": [
        {
            "name": "tiny-klein",
            "source": "tiny-klein",
            "warmup_shapes": [{"width": 64, "height": 64, "references": 0}],
            "max_batch_size": 4,
            "batch_wait_timeout_s": 0.2,
            "deployment_options": {"max_ongoing_requests": 8, "ray_actor_options": {"num_cpus": 0.1}},
        }
    ],
    "limits": TEST_LIMITS,
    "ingress_options": {"ray_actor_options": {"num_cpus": 0.1}},
}


# Generations must finish within 1 s.
TIMEOUT_CONFIG = {
    "models": [
        {
            "name": "tiny-klein",
            "source": "tiny-klein",
            "warmup_shapes": [{"width": 64, "height": 64, "references": 0}],
            "deployment_options": {"ray_actor_options": {"num_cpus": 0.1}},
        }
    ],
    "limits": {**TEST_LIMITS, "request_timeout_s": 1.0},
    "ingress_options": {"ray_actor_options": {"num_cpus": 0.1}},
}


def png_bytes(width: int, height: int, seed: int = 0, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    channels = len(mode)
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(), mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_b64_image(b64: str) -> Image.Image:
    import base64

    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


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
    """One local Ray for the whole run; 4 fake GPUs so num_gpus=1 replicas schedule on a CPU machine."""
    import ray
    from ray import serve

    ports = {"http": free_port(), "metrics": free_port()}
    ray.init(
        num_cpus=4,
        num_gpus=4,
        include_dashboard=False,
        log_to_driver=False,
        _metrics_export_port=ports["metrics"],
        _system_config={"metrics_report_interval_ms": 1000},
    )
    serve.start(http_options={"host": "127.0.0.1", "port": ports["http"]})
    yield ports
    serve.shutdown()
    ray.shutdown()


def run_app(config: dict, name: str, route_prefix: str, port: int) -> str:
    from ray import serve

    from deployments.app import build_app

    serve.run(build_app(config), name=name, route_prefix=route_prefix)
    return f"http://127.0.0.1:{port}{route_prefix.rstrip('/')}"


@pytest.fixture(scope="session")
def base_url(ray_cluster: dict[str, int]) -> str:
    """The tiny dev and klein models, open API, at the root."""
    return run_app(TEST_CONFIG, "flux2", "/", ray_cluster["http"])


@pytest.fixture(scope="session")
def prod_url(ray_cluster: dict[str, int]) -> str:
    return run_app(PROD_CONFIG, "prod", "/prod", ray_cluster["http"])


@pytest.fixture(scope="session")
def batch_url(ray_cluster: dict[str, int]) -> str:
    return run_app(BATCH_CONFIG, "batch", "/batch", ray_cluster["http"])


@pytest.fixture(scope="session")
def timeout_url(ray_cluster: dict[str, int]) -> str:
    return run_app(TIMEOUT_CONFIG, "timeout", "/timeout", ray_cluster["http"])


@pytest.fixture(scope="session")
def tight_url(ray_cluster: dict[str, int]) -> str:
    return run_app(TIGHT_CONFIG, "tight", "/tight", ray_cluster["http"])


@pytest.fixture(scope="session")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=120) as http:
        yield http
