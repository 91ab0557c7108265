"""The exact caches over real HTTP, on the session's app (tiny-dev): the same prompt and the same reference file
again give the same image bytes for the same seed, and the hit counters of the prompt, latent and reference caches
move in Prometheus."""

from __future__ import annotations

import base64
import time
import uuid

import httpx

from tests.helpers import png_bytes, wait_until

APP, MODEL = "flux2", "tiny-dev"
CACHES = {  # metric: the tags that tell its series apart (the ingress's cache has no model tag)
    "ray_flux2_prompt_cache": f'model="{MODEL}"',
    "ray_flux2_latent_cache": f'model="{MODEL}"',
    "ray_flux2_reference_cache": 'deployment="ImagesIngress"',
}
# Ray exports a replica's counters every metrics_report_interval_ms (1 s in the session's Ray, tests/conftest.py),
# so a scrape can miss the increments of the last requests before it: those of the suite that ran just before.
SETTLED_AFTER_S = 3.0


def counters(metrics_port: int) -> dict[str, float]:
    """Each cache's ``_hits_total`` and ``_misses_total`` of the app in a scrape of this node's metrics."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0]
        for cache, tag in CACHES.items():
            if (
                name in (f"{cache}_hits_total", f"{cache}_misses_total")
                and f'application="{APP}"' in line
                and tag in line
            ):
                found[name] = found.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


def settled_counters(metrics_port: int, timeout_s: float = 60) -> dict[str, float]:
    """The counters once the increments of every earlier request are in them: two scrapes ``SETTLED_AFTER_S``
    apart agree. Deltas from here count this test's requests only, whichever suite ran before it."""
    deadline = time.monotonic() + timeout_s
    last = counters(metrics_port)
    while time.monotonic() < deadline:
        time.sleep(SETTLED_AFTER_S)
        previous, last = last, counters(metrics_port)
        if previous == last:
            return last
    raise AssertionError(f"the cache counters still moved after {timeout_s:g} s: {last}")


def first_image(response: httpx.Response) -> bytes:
    assert response.status_code == 200, response.text
    return base64.b64decode(response.json()["data"][0]["b64_json"])


def test_same_prompt_and_reference_again_give_the_same_bytes_and_count_hits(
    base_url: str, ray_cluster: dict[str, int]
) -> None:
    port = ray_cluster["metrics"]
    before = settled_counters(port)
    prompt = f"a red car {uuid.uuid4().hex}"  # new to the replica: the first request misses
    reference = png_bytes(64, 64, seed=uuid.uuid4().int % 2**32)
    form = {"model": MODEL, "prompt": prompt, "seed": "7", "num_inference_steps": "2"}
    with httpx.Client(base_url=base_url, timeout=120) as client:
        generate = {"model": MODEL, "prompt": prompt, "seed": 3, "num_inference_steps": 2, "size": "64x64"}
        generated = [first_image(client.post("/v1/images/generations", json=generate)) for _ in range(2)]
        edited = [
            first_image(client.post("/v1/images/edits", data=form, files={"image": ("ref.png", reference)}))
            for _ in range(2)
        ]
        # The previous result as the reference (the playground's "Edit this result"): its PNG is not decoded.
        chained = client.post("/v1/images/edits", data=form, files={"image": ("result.png", edited[0])})
    assert generated[0] == generated[1] and edited[0] == edited[1]
    assert first_image(chained) != edited[0]
    moved = {  # the prompt five times (one miss), the file twice, the result once
        "ray_flux2_prompt_cache_misses_total": 1,
        "ray_flux2_prompt_cache_hits_total": 4,
        "ray_flux2_latent_cache_misses_total": 2,
        "ray_flux2_latent_cache_hits_total": 1,
        "ray_flux2_reference_cache_misses_total": 1,
        "ray_flux2_reference_cache_hits_total": 2,
    }

    def deltas() -> dict[str, float]:
        now = counters(port)
        return {name: now.get(name, 0.0) - before.get(name, 0.0) for name in moved}

    assert wait_until(lambda: deltas() == moved, timeout_s=60, interval_s=1), deltas()
