"""Context-parallel model deployment: one Serve replica spans N GPUs to cut one request's latency.

The replica reserves N bundles with Serve's ``placement_group_bundles`` (one ``{"GPU": 1}`` bundle per
rank, ``STRICT_PACK``: one host, NVLink). The replica itself is rank 0 and sits in bundle 0; it starts
N-1 :class:`ContextParallelWorker` actors in bundles 1..N-1 (owned by the replica, so they die with it),
publishes ``MASTER_ADDR``/``MASTER_PORT`` (its node IP and a free port) and every rank joins one
``torch.distributed`` group (NCCL on GPUs, gloo on CPUs) and loads the pipeline with context parallelism
(:mod:`deployments.engine.parallel`).

The deployment is the model server itself, :class:`~deployments.server.Flux2Model` (queueing, batching,
streaming progress, metrics, health), with a :class:`ContextParallelGroup` as its engine host: the replica
validates, then its engine fans the run out to the workers (``follow``) just before running it itself, and waits
for them after. Warm-up goes the same way. A run that fails on any rank after the ranks started exchanging
tensors leaves the group out of step: the host reports it broken, the replica refuses work and fails its health
check, and Serve replaces it (and its workers).

Config: a model with ``context_parallel: {degree: 2, mode: ulysses}``; ``deployments.app.build_app`` then binds
this deployment for it. As in ``server.py``, the engine's modules are imported where a rank first uses them, so that
building the app imports neither torch nor diffusers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import ray
from ray.util.placement_group import get_current_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from deployments.config import ContextParallel, ModelConfig
from deployments.server import Flux2Model
from deployments.types import ImageRequest

if TYPE_CHECKING:
    from deployments.engine.parallel import ContextParallelEngine

logger = logging.getLogger("ray.serve")

WORKER_PING_TIMEOUT_S = 20.0


@ray.remote(max_concurrency=2)  # engine work on one thread; ``ping`` answers while a run is in flight
class ContextParallelWorker:
    """Rank 1..N-1 of a context-parallel replica: the same engine, driven by rank 0."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flux2-cp-rank")
        self.engine: ContextParallelEngine | None = None

    def start(self, rank: int, master_addr: str, master_port: int, backend: str, config: ModelConfig) -> str:
        """Join the group and load (rank 0 does the same at the same time); returns where this rank runs."""

        def load() -> str:
            from deployments.engine.parallel import ContextParallelEngine, init_process_group

            options = config.context_parallel
            device = init_process_group(rank, options.degree, master_addr, master_port, backend, options.timeout_s)
            self.engine = ContextParallelEngine.from_config(config)
            return f"rank {rank} on {ray.util.get_node_ip_address()} {device}"

        return self._thread.submit(load).result()

    def follow(self, requests: list[ImageRequest], steps: int, guidance: float) -> int:
        assert self.engine is not None, "start() first"
        return self._thread.submit(self.engine.follow, requests, steps, guidance).result()

    def ping(self) -> None:
        if self.engine is None or self.engine.broken:
            raise RuntimeError(
                f"context-parallel worker unusable: {self.engine.broken if self.engine else 'not loaded'}"
            )


class ContextParallelGroup:
    """The engine host of a context-parallel replica: this process is rank 0 and leads ``degree - 1``
    :class:`ContextParallelWorker` actors, one in each other bundle of the replica's placement group."""

    def __init__(self, options: ContextParallel):
        self.options = options
        self.workers: list[Any] = []
        self.engine: ContextParallelEngine | None = None

    def start(self, config: ModelConfig) -> ContextParallelEngine:
        from deployments.engine import warm_up
        from deployments.engine.parallel import ContextParallelEngine, default_backend, free_port, init_process_group

        start = time.perf_counter()
        self.workers = self._start_workers()
        backend = default_backend()
        addr, port = ray.util.get_node_ip_address(), free_port()
        started = [
            worker.start.remote(rank, addr, port, backend, config) for rank, worker in enumerate(self.workers, start=1)
        ]
        init_process_group(0, self.options.degree, addr, port, backend, self.options.timeout_s)
        engine = ContextParallelEngine.from_config(config, self.options)
        where = ray.get(started)
        engine.fan_out = self._fan_out
        times = warm_up(engine)
        self.engine = engine
        logger.info(
            "model %s ready: context parallel %s x%d (%s), load %.1fs, warm-up %.1fs %s",
            engine.info.name,
            self.options.mode,
            self.options.degree,
            ", ".join(where),
            time.perf_counter() - start - engine.warmup_s,
            engine.warmup_s,
            times,
        )
        return engine

    def broken(self) -> str | None:
        if self.engine is not None and self.engine.broken:
            return f"context-parallel group out of step: {self.engine.broken}"
        return None

    async def check_health(self) -> None:
        pings = [worker.ping.remote() for worker in self.workers]
        await asyncio.wait_for(asyncio.gather(*pings), WORKER_PING_TIMEOUT_S)

    def _start_workers(self) -> list[Any]:
        group = get_current_placement_group()
        if group is None or len(group.bundle_specs) != self.options.degree:
            raise RuntimeError(
                f"a context-parallel replica of degree {self.options.degree} needs placement_group_bundles with "
                f"{self.options.degree} bundles (one per rank), got {group.bundle_specs if group else None}"
            )
        workers = []
        for index in range(1, self.options.degree):
            bundle = group.bundle_specs[index]
            strategy = PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=index)
            workers.append(
                ContextParallelWorker.options(
                    num_cpus=bundle.get("CPU", 0), num_gpus=bundle.get("GPU", 0), scheduling_strategy=strategy
                ).remote()
            )
        return workers

    def _fan_out(self, requests: list[ImageRequest], steps: int, guidance: float):
        refs = [worker.follow.remote(requests, steps, guidance) for worker in self.workers]

        def wait(raise_errors: bool) -> None:
            try:
                ray.get(refs, timeout=self.options.timeout_s)
            except Exception:
                if raise_errors:
                    raise

        return wait


class ContextParallelFlux2Model(Flux2Model):
    """The model server with a :class:`ContextParallelGroup` as its engine host, and Serve options of its own."""

    @staticmethod
    def deployment_options(model: ModelConfig) -> dict[str, Any]:
        """The single-GPU server's options plus one placement bundle per rank, packed on one node (NVLink)."""
        if model.context_parallel is None:
            raise ValueError(f"model {model.served_name} has no context_parallel section")
        serve_options = Flux2Model.deployment_options(model)
        actor = serve_options["ray_actor_options"]
        bundle = {key: actor[name] for key, name in (("CPU", "num_cpus"), ("GPU", "num_gpus")) if actor.get(name)}
        serve_options.setdefault("placement_group_bundles", [bundle] * model.context_parallel.degree)
        serve_options.setdefault("placement_group_strategy", "STRICT_PACK")
        return serve_options

    def __init__(self, model_config: ModelConfig):
        if model_config.context_parallel is None:
            raise ValueError("ContextParallelFlux2Model needs a model config with context_parallel set")
        super().__init__(model_config, ContextParallelGroup(model_config.context_parallel))
