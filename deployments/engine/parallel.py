"""Context parallelism: one request's FLUX.2 transformer split over N devices (Ray-free).

Every rank of a ``torch.distributed`` group (NCCL on GPUs, gloo on CPUs) loads the whole pipeline,
enables diffusers' context parallelism on the transformer and runs the SAME request with the same
seed. The transformer's ``_cp_plan`` splits the image and text tokens along the sequence across the
ranks; inside each attention call Ulysses (all-to-all: every rank gets all tokens of 1/N of the
heads) or ring attention (K/V passed around) lets every token see every other one; ``proj_out``
gathers the sequence again, so every rank holds the full noise prediction, steps the scheduler
identically and decodes the same images. Text encoding and VAE decoding are repeated on every rank
(a few percent of a dev request); the transformer's attention and MLP work is divided by N.

Two ways to drive the ranks: every rank calls ``generate``/``generate_batch`` with the same request
(torchrun-style scripts, the tests), or one leading rank validates and, through its ``fan_out`` hook,
has the others :meth:`~ContextParallelEngine.follow` the run it is starting (the Ray deployment).
Rules every caller must keep, because a collective that one rank skips hangs the others:

- all ranks call :meth:`ContextParallelEngine.from_config` together, then run the same requests
  with identical arguments, in the same order, one at a time;
- a run is never cancelled on one rank only: this engine ignores the reporter's cancel flag once
  a run has started;
- a run that fails after the first collective (OOM on one rank, a dead peer) leaves the group out of
  step: :class:`ContextParallelBroken` is raised and the group must be rebuilt (the replica restarts).

``torch.device(type, rank % device_count)`` in diffusers 0.42.1 divides by zero on a machine with no
accelerator (``ModelMixin._resolve_parallel_config``); :func:`enable_context_parallel` gives it a device
count of 1 on CPUs, which is what lets the tests run the real code path with gloo.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TypeVar
from unittest import mock

import torch
import torch.distributed as dist
from diffusers import ContextParallelConfig

from deployments.config import ContextParallel, ModelConfig
from deployments.engine.attention import FA3_BACKENDS, FA3_NOT_SPLIT
from deployments.engine.flux2_engine import Flux2Engine
from deployments.engine.load import LoadedPipeline, ModelLoadError, load_pipeline
from deployments.engine.memory import MemoryManager, configure_allocator
from deployments.engine.optimize import apply_optimizations
from deployments.engine.preset import resolve_preset
from deployments.engine.progress import StepReporter
from deployments.errors import Flux2Error, InvalidRequest
from deployments.types import ImageRequest, ImageResult

logger = logging.getLogger(__name__)

T = TypeVar("T")
FanOut = Callable[[list[ImageRequest], int, float], Callable[[bool], None]]

# Pipelines whose transformer calls are plain (one sequence per call). The reference-KV klein pipeline
# caches reference K/V between steps in the attention processors, which the sequence split would break.
CP_PIPELINES = frozenset({"Flux2Pipeline", "Flux2KleinPipeline"})
# Ring attention merges partial results with their log-sum-exp; these diffusers backends return it.
# The default "native" backend (torch SDPA) does not: it runs Ulysses only.
RING_BACKENDS = frozenset(
    {
        "flash",
        "flash_hub",
        "flash_varlen_hub",
        "_flash_3_hub",
        "_flash_3_varlen_hub",
        "_native_cudnn",
        "_native_flash",
        "sage",
        "sage_hub",
    }
)
_SHARD_ERROR = "divisible by mesh size"  # diffusers' EquipartitionSharder assertion


def diffusers_config(options: ContextParallel) -> ContextParallelConfig:
    if options.mode == "ulysses":
        return ContextParallelConfig(ulysses_degree=options.degree, ulysses_anything=options.any_length)
    return ContextParallelConfig(ring_degree=options.degree, ring_anything=options.any_length)


class ContextParallelBroken(RuntimeError):
    """A run failed after the ranks started exchanging tensors: the group is out of step and must be rebuilt."""


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_process_group(
    rank: int,
    world_size: int,
    master_addr: str,
    master_port: int,
    backend: str | None = None,
    timeout_s: float = 600.0,
) -> torch.device:
    """Join the default process group; on GPUs also pick this rank's device. Returns the device.

    With one visible GPU per process (Ray sets ``CUDA_VISIBLE_DEVICES`` per actor) the device is
    ``cuda:0``; with all GPUs visible (one process per GPU on one host) it is ``cuda:<rank>``.
    """
    backend = backend or default_backend()
    device = torch.device("cpu")
    kwargs = {}
    if backend == "nccl":
        device = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(device)  # load_pipeline's "cuda" is the current device
        kwargs["device_id"] = device
    dist.init_process_group(
        backend,
        init_method=f"tcp://{master_addr}:{master_port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
        **kwargs,
    )
    logger.info(
        "rank %d/%d joined the %s group at %s:%d (%s)", rank, world_size, backend, master_addr, master_port, device
    )
    return device


def check_supported(loaded: LoadedPipeline, config: ModelConfig, options: ContextParallel) -> None:
    """Refuse, before any collective, what context parallelism cannot run."""
    name = type(loaded.pipeline).__name__
    if name not in CP_PIPELINES:
        raise ModelLoadError(f"context parallelism does not support {name} (supported: {sorted(CP_PIPELINES)})")
    if config.step_cache != "none":
        raise ModelLoadError("step caches are untested with context parallelism; set step_cache: none")
    if dist.is_initialized() and dist.get_world_size() != options.degree:
        raise ModelLoadError(
            f"context_parallel degree {options.degree} but the process group has {dist.get_world_size()} ranks"
        )
    heads = loaded.pipeline.transformer.config.num_attention_heads
    if options.mode == "ulysses" and not options.any_length and heads % options.degree:
        raise ModelLoadError(f"ulysses degree {options.degree} does not divide the model's {heads} attention heads")
    if config.lora.adapters:
        raise ModelLoadError("LoRA adapters are untested with context parallelism; serve them on single-GPU replicas")
    if config.attention_backend in FA3_BACKENDS:
        raise ModelLoadError(f"attention_backend {config.attention_backend}: {FA3_NOT_SPLIT}")
    if options.mode == "ring" and config.attention_backend not in RING_BACKENDS:
        raise ModelLoadError(
            f"ring attention needs an attention_backend returning log-sum-exp, one of {sorted(RING_BACKENDS)}; "
            f"got {config.attention_backend or 'native (default)'}"
        )


@contextlib.contextmanager
def _cpu_device_count() -> Iterator[None]:
    """diffusers computes ``rank % torch.accelerator.device_count()``: 0 on a CPU-only host."""
    if torch.accelerator.device_count() > 0:
        yield
        return
    with mock.patch.object(torch.accelerator, "device_count", return_value=1):
        yield


def enable_context_parallel(transformer: torch.nn.Module, options: ContextParallel) -> None:
    """``transformer.enable_parallelism`` over the default process group (all ranks call it together)."""
    if not dist.is_initialized():
        raise RuntimeError("torch.distributed must be initialised before enabling context parallelism")
    with _cpu_device_count():
        transformer.enable_parallelism(config=diffusers_config(options))


class _NoRetryMemory(MemoryManager):
    """An OOM is not retried: a retry would start the transformer's collectives again on this rank alone."""

    def run(self, fn: Callable[[], T]) -> T:
        return fn()


class ContextParallelEngine(Flux2Engine):
    """One rank of a context-parallel engine: a :class:`Flux2Engine` whose transformer is split over the group.

    Every rank gets the full result; the caller keeps rank 0's. See the module docstring for the
    rules all ranks must follow.
    """

    def __init__(self, loaded: LoadedPipeline, config: ModelConfig, options: ContextParallel, **kwargs):
        super().__init__(loaded, config, **kwargs)
        self.options = options
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.memory = _NoRetryMemory(loaded.device, config.vram_policy, config.vram_pressure_fraction)
        self.broken: str | None = None
        # Set on the leading rank by a launcher (Ray): starts the same run on the other ranks and returns a
        # ``wait(raise_errors)`` to call once this rank is done.
        self.fan_out: FanOut | None = None

    @classmethod
    def from_config(cls, config: ModelConfig, options: ContextParallel | None = None) -> ContextParallelEngine:
        """Load, split and optimise; every rank calls this together (the mesh is built collectively).

        ``options`` default to ``config.context_parallel``.
        """
        options = options or config.context_parallel
        if options is None:
            raise ModelLoadError("context parallelism needs ContextParallel options (or config.context_parallel)")
        configure_allocator()
        start = time.perf_counter()
        loaded = load_pipeline(config)
        config = resolve_preset(config, loaded, split_over_ranks=True)
        check_supported(loaded, config, options)
        transformer = loaded.pipeline.transformer
        if config.attention_backend:  # enable_parallelism checks the backend in effect
            transformer.set_attention_backend(config.attention_backend)
        enable_context_parallel(transformer, options)
        compiled = apply_optimizations(loaded.pipeline, config, loaded.device)
        load_s = time.perf_counter() - start
        logger.info(
            "rank %d/%d: %s ready to warm up in %.2fs, context parallel %s x%d",
            dist.get_rank(),
            dist.get_world_size(),
            loaded.source,
            load_s,
            options.mode,
            options.degree,
        )
        return cls(loaded, config, options, compile=compiled, load_s=load_s)

    def generate_batch(self, requests: list[ImageRequest], reporter: StepReporter | None = None) -> list[ImageResult]:
        """Validate and run on this rank (which leads the others when :attr:`fan_out` is set)."""
        if reporter is not None:
            reporter.raise_if_cancelled()
            # Progress and previews still flow; a cancel would stop this rank alone, so it is not honoured.
            reporter = dataclasses.replace(reporter, cancel=threading.Event())
        return self._guarded(lambda: super(ContextParallelEngine, self).generate_batch(requests, reporter))

    def follow(self, requests: list[ImageRequest], steps: int, guidance: float) -> int:
        """Run what the leading rank validated and started (same requests, steps and guidance); return the count.

        No validation here: a request the leader refuses never reaches the followers.
        """

        def run() -> int:
            try:
                return len(self.memory.run(lambda: self._run_pipeline(requests, steps, guidance)))
            finally:
                self.memory.after_request()

        return self._guarded(run)

    def _run_pipeline(
        self, requests: list[ImageRequest], steps: int, guidance: float, reporter: StepReporter | None = None
    ) -> torch.Tensor:
        """Start the same run on the followers (``fan_out``), run this rank's share, then wait for them.

        A refused split is refused by every rank, so the followers are waited for and the group stays in
        step; any other failure leaves the group out of step (``_guarded`` marks it broken) and the
        followers are not waited for: they go down with the group.
        """
        wait = self.fan_out(requests, steps, guidance) if self.fan_out is not None else None
        try:
            images = super()._run_pipeline(requests, steps, guidance, reporter)
        except AssertionError as exc:
            if wait is not None and _SHARD_ERROR in str(exc):
                wait(False)  # the followers refuse the same split: wait, and the group stays in step
            raise
        if wait is not None:
            wait(True)
        return images

    def _guarded(self, run: Callable[[], T]) -> T:
        """Map a failed run to what it means for the group: an invalid request (all ranks agree) or a broken group."""
        if self.broken:
            raise ContextParallelBroken(f"context-parallel group out of step since: {self.broken}")
        try:
            return run()
        except Flux2Error:
            raise  # validation, identical on every rank before any collective
        except AssertionError as exc:
            if _SHARD_ERROR not in str(exc):
                raise self._mark_broken(exc) from exc
            # Raised on every rank by the sequence split, before the first collective: the group is fine.
            raise InvalidRequest(
                f"this size does not split evenly over {self.world_size} context-parallel ranks: the image tokens "
                f"(width/16 x height/16, plus each reference's) must divide by {self.world_size}",
                param="size",
                code="size_not_divisible",
            ) from None
        except Exception as exc:
            raise self._mark_broken(exc) from exc

    def _mark_broken(self, exc: BaseException) -> ContextParallelBroken:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        self.broken = f"{type(exc).__name__}: {first_line}"
        logger.error("rank %d: run failed, context-parallel group out of step: %s", self.rank, self.broken)
        return ContextParallelBroken(f"context-parallel rank {self.rank} failed: {self.broken}")


def free_port() -> int:
    """A TCP port free on this host now (for MASTER_PORT)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]
