"""Config changes under traffic, deployed as ``serve deploy`` does: a change that needs no new model (limits, the
adapter list, batching) goes through Serve's ``user_config`` and ``reconfigure``, and keeps every replica."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
from ray.serve.context import _get_global_client
from ray.serve.schema import ServeDeploySchema

from deployments.engine.synthetic.tiny import build_tiny_klein
from tests.helpers import TEST_LIMITS, decode_b64_image, wait_until
from tests.lora_files import save_peft_lora

APP = "live"
MODEL = "Flux2Model-tiny-klein"
SHAPE = {"width": 64, "height": 64, "references": 0}


def serve_config(
    adapters: list[dict[str, Any]], max_n: int, max_batch_size: int, model: dict | None = None, cache_mb: int = 256
) -> dict:
    """The app as a Serve config: the model in args, what may change live under the deployments' user_config
    (``cache_mb``: the ingress's reference cache and the model's prompt cache)."""
    args_model = {
        "name": "tiny-klein",
        "source": "tiny-klein",
        "warmup_shapes": [SHAPE],
        "default_size": [64, 64],
        "lora": {"adapters": adapters[:1], "max_rank": 8},
        "deployment_options": {"ray_actor_options": {"num_cpus": 0.1}},
    }
    live_model = {
        "lora": {"adapters": adapters, "max_rank": 8},
        "max_batch_size": max_batch_size,
        "prompt_cache_mb": cache_mb,
        **(model or {}),
    }
    return {
        "applications": [
            {
                "name": APP,
                "route_prefix": f"/{APP}",
                "import_path": "deployments.app:build_app",
                "args": {"models": [args_model], "ingress_options": {"ray_actor_options": {"num_cpus": 0.1}}},
                "deployments": [
                    {
                        "name": "ImagesIngress",
                        "user_config": {"limits": {**TEST_LIMITS, "max_n": max_n}, "reference_cache_mb": cache_mb},
                    },
                    {"name": MODEL, "user_config": live_model},
                ],
            }
        ]
    }


def deploy(config: dict) -> None:
    """What ``serve deploy`` hands the controller (the session's imperatively run apps are left alone)."""
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))


def replica_pids() -> set[int]:
    titles = (f"ServeReplica:{APP}:{MODEL}", f"ServeReplica:{APP}:ImagesIngress")
    return {
        p.pid for p in psutil.process_iter(["cmdline"]) if any(t in c for t in titles for c in p.info["cmdline"] or [])
    }


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    root = tmp_path_factory.mktemp("live-loras")
    transformer = build_tiny_klein().transformer
    return [
        {"name": name, "source": str(save_peft_lora(transformer, root / name, seed=seed, rank=4))}
        for seed, name in enumerate("ab")
    ]


@pytest.fixture(scope="module")
def live_url(ray_cluster: dict[str, int], adapters: list[dict[str, Any]]) -> Iterator[str]:
    from ray import serve

    deploy(serve_config(adapters[:1], max_n=2, max_batch_size=1))
    url = f"http://127.0.0.1:{ray_cluster['http']}/{APP}"
    try:
        assert wait_until(lambda: httpx.get(f"{url}/readyz", timeout=10).status_code == 200, 120, 1)
        yield url
    finally:
        serve.delete(APP)


class Traffic:
    """A request every 0.2 s from a background thread, each one's status counted."""

    def __init__(self, url: str) -> None:
        self.sent: list[tuple[float, int]] = []  # (monotonic time sent, status)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url,), daemon=True)

    def _run(self, url: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            seed = 0
            while not self._stop.is_set():
                body = {"prompt": "a cat", "seed": seed, "model": "tiny-klein/a" if seed % 2 else "tiny-klein"}
                sent = time.monotonic()
                self.sent.append((sent, client.post("/v1/images/generations", json=body).status_code))
                seed += 1
                time.sleep(0.2)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def statuses(self) -> Counter[int]:
        return Counter(status for _, status in self.sent)

    def between(self, start: float, end: float) -> int:
        return sum(start <= sent <= end for sent, _ in self.sent)


def listed_adapters(client: httpx.Client) -> set[str]:
    return {card["id"] for card in client.get("/v1/models").json()["data"]}


def cache_bytes(metrics_port: int) -> dict[str, float]:
    """The bytes the app's prompt cache (model) and reference cache (ingress) hold, by a scrape of this node."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    held = {}
    for cache in ("prompt", "reference"):
        name = f"ray_flux2_{cache}_cache_bytes{{"
        values = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and f'application="{APP}"' in line
        ]
        held[cache] = sum(values) if values else -1.0
    return held


def test_a_live_change_keeps_every_replica_and_drops_no_request(
    live_url: str, adapters: list[dict], ray_cluster: dict[str, int]
) -> None:
    port = ray_cluster["metrics"]
    with httpx.Client(base_url=live_url, timeout=60) as client:
        assert client.post("/v1/images/generations", json={"prompt": "x", "n": 3}).status_code == 400  # max_n 2
        assert wait_until(lambda: "tiny-klein/a" in listed_adapters(client), 30, 0.5)
        assert client.post("/v1/images/generations", json={"prompt": "x"}).status_code == 200  # a PNG result kept
        assert wait_until(lambda: min(cache_bytes(port).values()) > 0, 60, 1), cache_bytes(port)
        pids = replica_pids()
        assert len(pids) == 2, pids
        with Traffic(live_url) as traffic:
            time.sleep(2)
            deployed = time.monotonic()
            # A new limit, a new adapter, batching, and both caches off.
            deploy(serve_config(adapters, max_n=4, max_batch_size=2, cache_mb=0))
            assert wait_until(lambda: "tiny-klein/b" in listed_adapters(client), 60, 0.5)
            applied = time.monotonic()
            four = client.post("/v1/images/generations", json={"prompt": "x", "n": 4})
            assert four.status_code == 200, four.text
            assert [decode_b64_image(d["b64_json"]).size for d in four.json()["data"]] == [(64, 64)] * 4
            named = client.post("/v1/images/generations", json={"prompt": "x", "model": "tiny-klein/b", "seed": 1})
            assert named.status_code == 200 and named.headers["x-lora"] == "b:1", named.text
            time.sleep(2)
        assert set(traffic.statuses) == {200}, traffic.statuses
        assert traffic.between(deployed, applied) >= 1, "no request was sent while the change was applied"
        assert replica_pids() == pids  # the same processes: nothing restarted, nothing re-warmed
    assert wait_until(lambda: cache_bytes(port) == {"prompt": 0, "reference": 0}, 60, 1), cache_bytes(port)


def test_a_change_that_needs_a_new_model_is_refused_and_the_service_stays(live_url: str, adapters: list[dict]) -> None:
    """A key ``reconfigure`` cannot apply is logged as an error by the running replicas, which keep serving with
    the settings they had (Serve would replace a replica whose reconfigure raised with one that cannot start)."""
    pids = replica_pids()
    with httpx.Client(base_url=live_url, timeout=60) as client, Traffic(live_url) as traffic:
        deploy(serve_config(adapters, max_n=4, max_batch_size=2, model={"quantization": "fp8"}))
        time.sleep(8)
        still = client.post("/v1/images/generations", json={"prompt": "x", "n": 4})
        assert still.status_code == 200, still.text
    assert set(traffic.statuses) == {200}, traffic.statuses
    assert replica_pids() == pids
