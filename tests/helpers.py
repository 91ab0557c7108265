"""Test configs and helpers shared by the suites: configs of the tiny models, images, starting an app."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TEST_LIMITS = {
    "max_body_bytes": 2 * 1024 * 1024,
    "max_reference_images": 4,
    "max_side": 512,
    "max_output_pixels": 512 * 512,
    "max_prompt_chars": 500,
    "max_steps": 20,
    "max_n": 4,
}
# The tiny dev model warmed for 64x64 edits with one reference: the suites' model entry without its name.
TINY_DEV = {
    "source": "tiny-dev",
    "warmup_shapes": [{"width": 64, "height": 64, "references": 1}],
    "default_size": [64, 64],
}
TEST_CONFIG = {
    "models": [
        {"name": "tiny-dev", **TINY_DEV},
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


def packages_loaded_by(modules: list[str]) -> set[str]:
    """The top-level packages a fresh interpreter holds after importing ``modules`` from the repository root: what
    an import costs, which the test's own process, with everything imported, cannot tell."""
    check = f"import sys, {', '.join(modules)}; print(*{{name.split('.')[0] for name in sys.modules}})"
    loaded = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    return set(loaded.stdout.split())


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


@contextlib.contextmanager
def served_app(config: dict, name: str, route_prefix: str, port: int) -> Iterator[str]:
    """The app running under ``route_prefix`` (its URL) until the block ends, then deleted: an idle replica still
    takes about 1% of a core (health checks, metrics), and the suites start some thirty on two cores. The delete
    does not wait for the replicas' graceful shutdown (3 s an app): no app reuses a name or a route."""
    from ray import serve

    from deployments.app import build_app

    serve.run(build_app(config), name=name, route_prefix=route_prefix)
    try:
        yield f"http://127.0.0.1:{port}{route_prefix.rstrip('/')}"
    finally:
        serve.delete(name, _blocking=False)


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.5) -> bool:
    """Whether ``predicate`` came true within ``timeout_s`` (polled every ``interval_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False
