"""Production behaviour on CPU with the production graph shape (num_gpus=1 replicas on fake GPUs):
auth, metrics, backpressure, autoscaling, replica and ingress faults, bad-input floods.

Load and fault tests print their counts (sent, succeeded, rejected, failed, hung) and append them
to test-artifacts/operations.json; docs/operations.md records a run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import psutil
import pytest
import ray
from ray import serve

from tests.helpers import API_KEYS, TEST_LIMITS, decode_b64_image, png_bytes, production_model, served_app, wait_until

AUTH = {"authorization": f"Bearer {API_KEYS[1]}"}
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SLOW = {"prompt": "a cat", "size": "512x512", "num_inference_steps": 12}  # ~0.5-2 s on a CPU core


def record(name: str, counts: dict) -> None:
    print(f"\n{name}: {json.dumps(counts)}")
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "operations.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = counts
    path.write_text(json.dumps(data, indent=2))


def outcome(send: Callable[[], httpx.Response]) -> str:
    """succeeded | rejected (503/429 with Retry-After) | failed (anything else) | hung (client timeout)."""
    try:
        response = send()
    except httpx.TimeoutException:
        return "hung"
    if response.status_code == 200:
        return "succeeded"
    if response.status_code in (429, 503) and "retry-after" in response.headers:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        return "rejected"
    return f"failed:{response.status_code}"


def running_replicas(app: str, deployment: str = "Flux2Model-flux2") -> int:
    status = serve.status().applications[app].deployments[deployment]
    return status.replica_states.get("RUNNING", 0)


def kill_replica(app: str, deployment: str) -> None:
    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    actors = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]
    assert actors, f"no replica actor named {prefix}*"
    ray.kill(ray.get_actor(actors[0]["name"], namespace=actors[0]["namespace"]), no_restart=True)


# --- auth -------------------------------------------------------------------------------------------------------


def test_api_requires_a_key(prod_url: str) -> None:
    with httpx.Client(base_url=prod_url, timeout=60) as client:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {API_KEYS[0]}"}):
            response = client.post("/v1/images/generations", json={"prompt": "a cat"}, headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_api_key"
            assert response.headers["www-authenticate"] == "Bearer"
        assert client.get("/v1/models").status_code == 401
        assert client.get("/healthz").status_code == 200  # health stays open
        assert client.get("/readyz").status_code == 200
        ok = client.post("/v1/images/generations", json={"prompt": "a cat"}, headers=AUTH)
        assert ok.status_code == 200 and decode_b64_image(ok.json()["data"][0]["b64_json"]).size == (64, 64)


def test_openai_client_with_api_key(prod_url: str) -> None:
    client = openai.OpenAI(base_url=f"{prod_url}/v1", api_key=API_KEYS[0], max_retries=0)
    result = client.images.edit(image=("a.png", png_bytes(64, 64), "image/png"), prompt="make it blue")
    assert decode_b64_image(result.data[0].b64_json).size == (64, 64)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{prod_url}/v1", api_key="nope", max_retries=0).images.generate(prompt="x")


# --- metrics ----------------------------------------------------------------------------------------------------


def test_prometheus_metrics_are_exported(prod_url: str, ray_cluster: dict[str, int]) -> None:
    with httpx.Client(base_url=prod_url, timeout=60) as client:
        assert client.post("/v1/images/generations", json={"prompt": "a cat", "n": 2}, headers=AUTH).status_code == 200
        assert client.post("/v1/images/generations", json={"prompt": ""}, headers=AUTH).status_code == 400
    wanted = [
        "ray_flux2_requests_total{",
        'status="200"',
        'status="400"',
        "ray_flux2_request_latency_s_bucket",
        "ray_flux2_images_out_total",
        "ray_flux2_generate_s_bucket",
        "ray_flux2_step_s_bucket",
        "ray_flux2_queue_wait_s_bucket",
        "ray_flux2_peak_vram_bytes",
        "ray_serve_num_http_requests",
    ]
    text = ""

    def scraped_all() -> bool:
        nonlocal text
        text = httpx.get(f"http://127.0.0.1:{ray_cluster['metrics']}/metrics", timeout=10).text
        return all(name in text for name in wanted)

    assert wait_until(scraped_all, timeout_s=90, interval_s=2), [n for n in wanted if n not in text]


def images_out(metrics_port: int, app: str) -> float | None:
    """``ray_flux2_images_out_total`` of ``app`` in a scrape of this node's metrics (None before it is exported)."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    prefix = "ray_flux2_images_out_total{"
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix) and app in line]
    return sum(values) if values else None


def settled_images_out(metrics_port: int, app: str) -> float:
    """The counter once two scrapes 3 s apart agree: what earlier requests added has reached the exporter."""
    previous = None
    for _ in range(30):
        current = images_out(metrics_port, app)
        if current is not None and current == previous:
            return current
        previous = current
        time.sleep(3)
    raise AssertionError(f"ray_flux2_images_out_total of {app} did not settle: {previous}")


def test_images_out_counts_streamed_and_answered_images(prod_url: str, ray_cluster: dict[str, int]) -> None:
    port = ray_cluster["metrics"]
    before = settled_images_out(port, "prod")
    with httpx.Client(base_url=prod_url, timeout=60, headers=AUTH) as client:
        assert client.post("/v1/images/generations", json={"prompt": "a cat", "n": 2}).status_code == 200
        with client.stream("POST", "/v1/images/generations", json={"prompt": "a cat", "n": 2, "stream": True}) as s:
            completed = sum(line.startswith("event: image_generation.completed") for line in s.iter_lines())
    assert completed == 2
    assert wait_until(lambda: images_out(port, "prod") == before + 4, 60, 1), (before, images_out(port, "prod"))
    assert settled_images_out(port, "prod") == before + 4


DOCUMENTED = [Path(__file__).resolve().parents[2] / name for name in ("README.md", "docs/operations.md")]


def test_every_documented_metric_is_scraped(prod_url: str, ray_cluster: dict[str, int]) -> None:
    """Every metric name the README and the PromQL in docs/operations.md use exists in a real scrape, the
    should-stay-flat counters included before their first event."""
    names = {name for path in DOCUMENTED for name in re.findall(r"\bray_[a-z0-9_]+", path.read_text())}
    assert "ray_flux2_compile_events_total" in names
    with httpx.Client(base_url=prod_url, timeout=60) as client:
        assert client.post("/v1/images/generations", json={"prompt": "a cat"}, headers=AUTH).status_code == 200
        assert client.post("/v1/images/generations", json={"prompt": ""}, headers=AUTH).status_code == 400
    scraped: set[str] = set()
    zero: dict[str, float] = {}

    def scraped_all() -> bool:
        text = httpx.get(f"http://127.0.0.1:{ray_cluster['metrics']}/metrics", timeout=10).text
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name = re.split(r"[{ ]", line, maxsplit=1)[0]
                scraped.add(name)
                if 'application="prod"' in line:
                    zero[name] = float(line.rsplit(" ", 1)[1])
        return all(_exported(name, scraped) for name in names)

    assert wait_until(scraped_all, timeout_s=90, interval_s=2), sorted(n for n in names if not _exported(n, scraped))
    for counter in ("ray_flux2_compile_events_total", "ray_flux2_oom_recoveries_total"):
        assert zero.get(counter) == 0.0, (counter, zero.get(counter))


def _exported(name: str, scraped: set[str]) -> bool:
    """A histogram is documented by its base name and scraped as _bucket, _sum and _count."""
    return name in scraped or any(f"{name}_{part}" in scraped for part in ("bucket", "sum", "count"))


# --- backpressure and faults ------------------------------------------------------------------------------------


def test_queue_overflow_is_rejected_at_once_and_accepted_requests_complete(tight_url: str) -> None:
    sent = 12
    with httpx.Client(base_url=tight_url, timeout=120) as client, ThreadPoolExecutor(sent) as pool:
        started = time.monotonic()
        timed: list[tuple[str, float]] = list(
            pool.map(
                lambda _: (outcome(lambda: client.post("/v1/images/generations", json=SLOW)), time.monotonic()),
                range(sent),
            )
        )
    counts = Counter(result for result, _ in timed)
    record("backpressure", {"sent": sent, **counts})
    assert counts["rejected"] >= 1 and counts["succeeded"] >= 1
    assert counts["succeeded"] + counts["rejected"] == sent and counts["hung"] == 0
    first_done = min(done for result, done in timed if result == "succeeded")
    first_rejected = min(done for result, done in timed if result == "rejected")
    assert first_rejected - started < first_done - started  # rejections answer before the first image


def test_busy_service_stays_ready(tight_url: str) -> None:
    with httpx.Client(base_url=tight_url, timeout=120) as client, ThreadPoolExecutor(3) as pool:
        # The listing never waits for a replica: its details arrive once the replica has described itself.
        assert wait_until(lambda: client.get("/v1/models").json()["data"][0].get("family") == "dev", 20, 0.2)
        busy = [pool.submit(client.post, "/v1/images/generations", json=SLOW) for _ in range(3)]
        time.sleep(0.5)  # the replica is now generating with its queue full
        started = time.monotonic()
        ready = client.get("/readyz")
        assert ready.status_code == 200 and time.monotonic() - started < 3, ready.text
        assert ready.json()["models"]["flux2"]["running_replicas"] == 1
        started = time.monotonic()
        models = client.get("/v1/models").json()["data"]
        assert models[0]["family"] == "dev" and time.monotonic() - started < 3  # described once, kept
        for future in busy:
            assert future.result().status_code in (200, 503)


def test_client_disconnect_frees_its_queue_slot(tight_url: str) -> None:
    with httpx.Client(base_url=tight_url, timeout=0.3) as impatient, ThreadPoolExecutor(6) as pool:
        results = list(
            pool.map(lambda _: outcome(lambda: impatient.post("/v1/images/generations", json=SLOW)), range(6))
        )
    assert results.count("hung") >= 1  # these clients hung up
    with httpx.Client(base_url=tight_url, timeout=60) as client:
        assert wait_until(
            lambda: client.post("/v1/images/generations", json={"prompt": "a cat"}).status_code == 200, 30
        ), "queue slots held by disconnected clients were not freed"


def test_request_timeout_answers_504_and_frees_the_engine(timeout_url: str) -> None:
    slow = {"prompt": "a cat", "size": "512x512", "num_inference_steps": 20, "n": 4}
    with httpx.Client(base_url=timeout_url, timeout=60) as client:
        started = time.monotonic()
        response = client.post("/v1/images/generations", json=slow)
        assert response.status_code == 504 and time.monotonic() - started < 5
        assert response.json()["error"]["code"] == "timeout"
        # The abandoned generation stops at its next step, so a small request is not stuck behind it.
        follow_up = client.post("/v1/images/generations", json={"prompt": "a cat", "size": "64x64"})
        assert follow_up.status_code == 200 and float(follow_up.headers["x-queue-ms"]) < 500


def test_replica_killed_mid_request_answers_cleanly_and_recovers(tight_url: str) -> None:
    with httpx.Client(base_url=tight_url, timeout=60) as client, ThreadPoolExecutor(2) as pool:
        in_flight = [pool.submit(outcome, lambda: client.post("/v1/images/generations", json=SLOW)) for _ in range(2)]
        time.sleep(0.3)
        kill_replica("tight", "Flux2Model-flux2")
        results = Counter(future.result() for future in in_flight)
        recovered = wait_until(
            lambda: client.post("/v1/images/generations", json={"prompt": "a cat"}).status_code == 200, 90, 1
        )
    record("replica_killed", {"sent": 2, **results, "recovered": recovered})
    assert results["hung"] == 0
    assert all(key in ("succeeded", "rejected", "failed:503") for key in results), results
    assert recovered


# A replica whose warm-up takes seconds, so its replacement leaves a window with no running replica.
SLOW_START_SHAPES = [{"width": 512, "height": 512, "references": refs} for refs in range(4)]


def slow_start_app(name: str, wait_s: float, port: int) -> contextlib.AbstractContextManager[str]:
    model = {**production_model(num_replicas=1), "warmup_shapes": SLOW_START_SHAPES}
    limits = {**TEST_LIMITS, "no_replica_wait_s": wait_s}
    config = {"models": [model], "limits": limits, "ingress_options": {"ray_actor_options": {"num_cpus": 0.1}}}
    return served_app(config, name, f"/{name}", port)


def kill_and_wait_for_no_replica(app: str) -> None:
    kill_replica(app, "Flux2Model-flux2")
    assert wait_until(lambda: running_replicas(app) == 0, timeout_s=30, interval_s=0.1)
    time.sleep(1.5)  # older than the ingress's cached replica count


@pytest.fixture(scope="module")
def no_wait_url(ray_cluster: dict[str, int]) -> Iterator[str]:
    """A slow-starting app that answers at once when it has no running replica; each test that kills its replica
    waits for the replacement before it ends."""
    with slow_start_app("crash", 0, ray_cluster["http"]) as url:
        yield url


def test_model_without_a_running_replica_is_answered_at_once(no_wait_url: str) -> None:
    with httpx.Client(base_url=no_wait_url, timeout=120) as client:
        kill_and_wait_for_no_replica("crash")
        started = time.perf_counter()
        response = client.post("/v1/images/generations", json={"prompt": "a cat"})
        elapsed = time.perf_counter() - started
        still_down = running_replicas("crash") == 0
        recovered = wait_until(
            lambda: client.post("/v1/images/generations", json={"prompt": "a cat"}).status_code == 200, 120, 1
        )
    assert still_down, "the replacement came up before the request: the window was not tested"
    assert response.status_code == 503 and response.json()["error"]["code"] == "no_replica", response.text
    assert int(response.headers["retry-after"]) > 0 and elapsed < 2.0, elapsed
    assert recovered


def replica_pid(app: str, deployment: str = "Flux2Model-flux2") -> int:
    """The process of the app's only replica of ``deployment`` (Ray titles it ``ray::ServeReplica:<app>:<dep>``)."""
    title = f"ServeReplica:{app}:{deployment}"
    pids = [p.pid for p in psutil.process_iter(["cmdline"]) if any(title in part for part in p.info["cmdline"] or [])]
    assert len(pids) == 1, pids
    return pids[0]


def test_replica_sigkilled_under_traffic_fails_fast(no_wait_url: str) -> None:
    """SIGKILL of the only replica while a request is sent every 0.5 s, until the replacement has served one:
    each is answered 503 + Retry-After within a second or served by a live replica; none is held for the
    replacement's warm-up (the controller lists the dead replica as RUNNING for seconds after the kill)."""
    answers: list[tuple[float, float, str]] = []  # (sent, seconds to answer, outcome)

    def send(client: httpx.Client, seed: int) -> None:
        sent = time.monotonic()
        result = outcome(lambda: client.post("/v1/images/generations", json={"prompt": "a cat", "seed": seed}))
        answers.append((sent, time.monotonic() - sent, result))

    def replaced() -> bool:
        """The one replica after the kill has answered: the window without a replica is over."""
        return any(sent >= killed and result == "succeeded" for sent, _, result in list(answers))

    with httpx.Client(base_url=no_wait_url, timeout=60) as client:
        with ThreadPoolExecutor(8) as pool:
            for seed in range(50):
                if seed == 4:
                    killed = time.monotonic()
                    os.kill(replica_pid("crash"), signal.SIGKILL)
                if seed > 4 and replaced():
                    break
                pool.submit(send, client, seed)
                time.sleep(0.5)
        recovered = wait_until(
            lambda: client.post("/v1/images/generations", json={"prompt": "a cat"}).status_code == 200, 120, 1
        )
    after = [(sent - killed, took, result) for sent, took, result in sorted(answers) if sent >= killed]
    counts = Counter(result for _, _, result in after)
    record("replica_sigkilled", {"sent_after_kill": len(after), **counts, "slowest_s": max(t for _, t, _ in after)})
    assert set(counts) <= {"succeeded", "rejected"} and counts["rejected"] >= 1, counts
    held = [(round(at, 1), round(took, 1), result) for at, took, result in after if took > 1.5]
    assert not held, f"answers that waited (sent s after the kill, seconds, outcome): {held}"
    assert recovered


def test_no_replica_wait_holds_the_request_until_a_replica_is_up(ray_cluster: dict[str, int]) -> None:
    with slow_start_app("patient", 120, ray_cluster["http"]) as url, httpx.Client(base_url=url, timeout=180) as client:
        kill_and_wait_for_no_replica("patient")
        response = client.post("/v1/images/generations", json={"prompt": "a cat"})
    assert response.status_code == 200, response.text
    assert float(response.headers["x-queue-ms"]) > 1000  # it waited for the replacement's warm-up


def test_ingress_restart_recovers(prod_url: str) -> None:
    with httpx.Client(base_url=prod_url, timeout=30) as client:
        kill_replica("prod", "ImagesIngress")
        recovered = wait_until(
            lambda: client.post("/v1/images/generations", json={"prompt": "a cat"}, headers=AUTH).status_code == 200,
            90,
            1,
        )
    record("ingress_killed", {"recovered": recovered})
    assert recovered


def test_bad_input_flood_interleaved_with_good_requests(prod_url: str) -> None:
    bad_bodies = [{"prompt": ""}, {"prompt": "x", "size": "7x7"}, {"prompt": "x", "n": 0}, {"nope": 1}]
    jobs = [("good", {"prompt": "a cat"}) if i % 3 == 0 else ("bad", bad_bodies[i % 4]) for i in range(48)]
    with httpx.Client(base_url=prod_url, timeout=120) as client, ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(
                lambda job: (job[0], client.post("/v1/images/generations", json=job[1], headers=AUTH).status_code),
                jobs,
            )
        )
    counts = Counter(f"{kind}:{status}" for kind, status in statuses)
    record("bad_input_flood", {"sent": len(jobs), **counts})
    assert all(status == 200 for kind, status in statuses if kind == "good")
    assert all(status == 400 for kind, status in statuses if kind == "bad")


def test_autoscaling_up_under_load_and_back_down(prod_url: str) -> None:
    assert wait_until(lambda: running_replicas("prod") == 1, 60)
    peak, stop_at = 1, time.monotonic() + 60
    counts: Counter[str] = Counter()

    def client_loop(_: int) -> None:
        with httpx.Client(base_url=prod_url, timeout=120) as client:
            while time.monotonic() < stop_at and peak < 3:
                counts[outcome(lambda: client.post("/v1/images/generations", json=SLOW, headers=AUTH))] += 1

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(client_loop, i) for i in range(6)]
        while time.monotonic() < stop_at and peak < 3:
            peak = max(peak, running_replicas("prod"))
            time.sleep(0.5)
        for future in futures:
            future.result()
    scaled_down = wait_until(lambda: running_replicas("prod") == 1, 90, 1)
    record("autoscaling", {"peak_replicas": peak, "scaled_back_to_1": scaled_down, **counts})
    assert peak >= 3
    assert scaled_down
    assert counts["hung"] == 0 and all(key in ("succeeded", "rejected") for key in counts), counts


# --- health ------------------------------------------------------------------------------------------------------


def test_broken_engine_fails_health_and_refuses_work(ray_cluster: dict[str, int]) -> None:
    """The replica logic Ray's health checks act on: a sticky CUDA error marks the engine broken."""
    import asyncio

    from deployments.config import ModelConfig
    from deployments.errors import Unavailable
    from deployments.server import Flux2Model
    from deployments.types import ImageRequest

    def run(coroutine):  # a loop of its own: other tests (Playwright) may own this thread's loop
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, coroutine).result()

    config = {"source": "tiny-klein", "warmup_shapes": [{"width": 64, "height": 64, "references": 0}]}
    replica = Flux2Model(ModelConfig.model_validate(config))
    request = ImageRequest(prompt="a cat", width=64, height=64)
    run(replica.check_health())  # healthy
    assert run(replica.generate(request)).images[0].shape == (64, 64, 3)

    def sticky_cuda_error(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    replica.engine._run_pipeline = sticky_cuda_error
    with pytest.raises(RuntimeError, match="CUDA error"):
        run(replica.generate(request))
    with pytest.raises(RuntimeError, match="engine broken"):
        run(replica.check_health())  # Ray replaces a replica whose health check fails
    with pytest.raises(Unavailable) as err:
        run(replica.generate(request))
    assert err.value.code == "replica_unhealthy" and err.value.retry_after_s > 0
