"""Prometheus metrics through ``ray.serve.metrics`` (exported with a ``ray_`` prefix, tagged with the
deployment and replica automatically). Create them inside a replica, never at import time."""

from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram

from deployments.types import AdapterStats, CacheStats, Timings

LATENCY_BOUNDARIES_S = [0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300]
STEP_BOUNDARIES_S = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2]


def publish_zero(counter: Counter, tags: dict[str, str]) -> None:
    """Export a counter at 0 before its first event, so dashboards show a flat line instead of no data.

    ``Counter.inc`` refuses 0; recording 0 is what the first ``inc`` would do, less the increment.
    """
    counter._record(0, tags=tags)


class CacheMetrics:
    """One exact cache's hits, misses and evictions (counters) and the bytes it holds (a gauge), published from its
    cumulative stats: ``ray_flux2_<name>_cache_hits_total``, ..., ``ray_flux2_<name>_cache_bytes``."""

    def __init__(self, name: str, what: str, tags: dict[str, str], baseline: CacheStats) -> None:
        """``baseline``: the stats when publishing starts (what warm-up did is not counted)."""
        self.tags = tags
        self.counters = {
            field: Counter(f"flux2_{name}_cache_{field}", f"{what}: {field}", tag_keys=tuple(tags))
            for field in ("hits", "misses", "evictions")
        }
        self.held = Gauge(f"flux2_{name}_cache_bytes", f"{what}: bytes held", tag_keys=tuple(tags))
        for counter in self.counters.values():
            publish_zero(counter, tags)
        self.last = baseline
        self.held.set(baseline.bytes, tags=tags)

    def publish(self, stats: CacheStats) -> None:
        """What happened since the last call."""
        for field, counter in self.counters.items():
            if delta := getattr(stats, field) - getattr(self.last, field):
                counter.inc(delta, tags=self.tags)
        self.held.set(stats.bytes, tags=self.tags)
        self.last = stats


class IngressMetrics:
    def __init__(self, models: list[str], references: CacheStats) -> None:
        self.requests = Counter(
            "flux2_requests", "HTTP requests by route, model and status", tag_keys=("route", "model", "status")
        )
        self.latency = Histogram(
            "flux2_request_latency_s", "end-to-end request latency", LATENCY_BOUNDARIES_S, tag_keys=("route", "model")
        )
        self.images = Counter("flux2_images_out", "images returned", tag_keys=("model",))
        for model in models:
            publish_zero(self.images, {"model": model})
        self.references = CacheMetrics("reference", "decoded reference images kept by the ingress", {}, references)

    def observe(self, route: str, model: str, status: int, latency_s: float) -> None:
        self.requests.inc(tags={"route": route, "model": model, "status": str(status)})
        self.latency.observe(latency_s, tags={"route": route, "model": model})

    def images_out(self, model: str, images: int) -> None:
        """Images sent to a client: a response's, or a stream's ``.completed`` events, which end after its status."""
        self.images.inc(images, tags={"model": model})


class ModelMetrics:
    def __init__(self, model: str, caches: dict[str, CacheStats]) -> None:
        """``caches``: the engine's caches (``Conditioning.stats``) when the replica is ready."""
        self.tags = {"model": model}
        keys = ("model",)
        self.queue_wait = Histogram("flux2_queue_wait_s", "wait for the engine thread", LATENCY_BOUNDARIES_S, keys)
        self.generate = Histogram("flux2_generate_s", "engine time per request", LATENCY_BOUNDARIES_S, keys)
        self.step = Histogram("flux2_step_s", "engine time per denoising step", STEP_BOUNDARIES_S, keys)
        self.compiles = Counter("flux2_compile_events", "requests that met a shape outside the warm-up", keys)
        self.peak_vram = Gauge("flux2_peak_vram_bytes", "peak VRAM allocated by the last request", keys)
        self.oom_recoveries = Counter("flux2_oom_recoveries", "CUDA OOMs recovered by freeing memory", keys)
        self.failures = Counter("flux2_generate_failures", "requests that failed in the engine", keys)
        self.adapter = Histogram("flux2_adapter_s", "LoRA adapters read and switched in", STEP_BOUNDARIES_S, keys)
        self.adapter_counts = {
            field: Counter(f"flux2_adapter_{field}", f"LoRA adapter {field.replace('_', ' ')}", keys)
            for field in ("loads", "hits", "evictions", "load_failures")
        }
        self.adapters_resident = Gauge("flux2_adapters_resident", "LoRA adapters in device memory", keys)
        for counter in (self.compiles, self.oom_recoveries, self.failures, *self.adapter_counts.values()):
            publish_zero(counter, self.tags)
        what = {"prompt": "prompt embeddings kept on the device", "latent": "reference latents kept on the device"}
        self.caches = {name: CacheMetrics(name, what[name], self.tags, stats) for name, stats in caches.items()}

    def observe(self, timings: Timings, replica_queue_s: float, new_compiles: int, new_ooms: int) -> None:
        self.queue_wait.observe(replica_queue_s, tags=self.tags)
        self.adapter.observe(timings.adapter_s, tags=self.tags)
        self.generate.observe(timings.generate_s, tags=self.tags)
        self.step.observe(timings.step_s, tags=self.tags)
        self.peak_vram.set(timings.peak_vram_gb * 2**30, tags=self.tags)
        if new_compiles:
            self.compiles.inc(new_compiles, tags=self.tags)
        if new_ooms:
            self.oom_recoveries.inc(new_ooms, tags=self.tags)

    def observe_adapters(self, before: AdapterStats, after: AdapterStats, resident: int) -> None:
        """What a request did to the LoRA adapters (loads and evictions happen only when it names some)."""
        for field, counter in self.adapter_counts.items():
            delta = getattr(after, field) - getattr(before, field)
            if delta:
                counter.inc(delta, tags=self.tags)
        self.adapters_resident.set(resident, tags=self.tags)

    def observe_caches(self, caches: dict[str, CacheStats]) -> None:
        for name, stats in caches.items():
            self.caches[name].publish(stats)
