"""Context parallelism on CPU: the real diffusers code path over a gloo group of 2 processes, on the tiny model.

Two spawned ranks give the single-process images (uint8, within 1 level); the sequence is really split; a size
that does not split is a clean 400 on every rank and leaves the group usable. tests/serve/test_context_parallel.py
serves a 2-rank replica over HTTP.
"""

from __future__ import annotations

import queue
import traceback
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from deployments.config import ContextParallel, ModelConfig
from deployments.engine import Flux2Engine, ModelLoadError
from deployments.engine.attention import FA3_NOT_SPLIT
from deployments.engine.load import load_pipeline
from deployments.engine.parallel import check_supported, free_port
from deployments.errors import Flux2Error, InvalidRequest
from deployments.types import ImageRequest
from tests.helpers import TINY_DEV

RNG = np.random.default_rng(0)
REFERENCE = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
REQUESTS = [
    ImageRequest(prompt="a red car", width=64, height=64, seed=3, num_inference_steps=3),
    ImageRequest(prompt="a red car", width=80, height=80, seed=3, num_inference_steps=2),  # 25 tokens: odd
    ImageRequest(prompt="make it blue", width=64, height=64, images=(REFERENCE,), seed=5, num_inference_steps=3),
]


def _rank_main(rank: int, world_size: int, port: int, results: Any) -> None:
    """One rank: join gloo, load with context parallelism, warm up, run REQUESTS; rank 0 reports."""
    try:
        from deployments.engine import warm_up
        from deployments.engine.parallel import ContextParallelEngine, init_process_group

        init_process_group(rank, world_size, "127.0.0.1", port, backend="gloo", timeout_s=60)
        engine = ContextParallelEngine.from_config(
            ModelConfig.model_validate(TINY_DEV), ContextParallel(degree=world_size)
        )
        warm_up(engine)
        seen: list[int] = []
        engine.pipeline.transformer.transformer_blocks[0].register_forward_pre_hook(
            lambda _module, _args, kwargs: seen.append(kwargs["hidden_states"].shape[1]), with_kwargs=True
        )
        outputs: list[Any] = []
        for request in REQUESTS:
            seen.clear()
            try:
                outputs.append((engine.generate(request).images, max(seen)))
            except Flux2Error as exc:
                outputs.append(exc.code)
        if rank == 0:
            results.put(("ok", outputs))
        torch.distributed.destroy_process_group()
    except BaseException:
        results.put(("error", f"rank {rank}: {traceback.format_exc()}"))


def test_two_ranks_match_one_process() -> None:
    ctx = mp.get_context("spawn")
    results, port = ctx.Queue(), free_port()
    ranks = [ctx.Process(target=_rank_main, args=(rank, 2, port, results)) for rank in range(2)]
    for process in ranks:
        process.start()
    # The single-process reference runs while the ranks start.
    single = Flux2Engine.from_config(ModelConfig.model_validate(TINY_DEV))
    expected = [single.generate(REQUESTS[0]).images, single.generate(REQUESTS[2]).images]
    try:
        status, outputs = results.get(timeout=150)
    except queue.Empty:
        pytest.fail("the context-parallel ranks did not answer in time")
    finally:
        for process in ranks:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert status == "ok", outputs
    (t2i, t2i_tokens), not_divisible, (edit, edit_tokens) = outputs
    assert not_divisible == "size_not_divisible"  # and the group still ran the edit after it
    assert t2i_tokens == 16 // 2  # 64x64 -> 4x4 image tokens, split over 2 ranks
    assert edit_tokens == (16 + 16) // 2  # plus the reference's 16 tokens
    for got, want in zip([t2i, edit], expected, strict=True):
        assert len(got) == len(want) == 1
        diff = np.abs(got[0].astype(np.int16) - want[0].astype(np.int16))
        assert diff.max() <= 1, f"context-parallel output differs from one process by up to {diff.max()} levels"


def test_unsupported_setups_are_refused_before_any_collective() -> None:
    dev = load_pipeline(ModelConfig.model_validate(TINY_DEV))
    check_supported(dev, ModelConfig.model_validate(TINY_DEV), ContextParallel(degree=2))
    with pytest.raises(ModelLoadError, match="attention heads"):  # the tiny model has 2 heads
        check_supported(dev, ModelConfig.model_validate(TINY_DEV), ContextParallel(degree=4))
    with pytest.raises(ModelLoadError, match="log-sum-exp"):
        check_supported(dev, ModelConfig.model_validate(TINY_DEV), ContextParallel(degree=2, mode="ring"))
    ring = ModelConfig.model_validate({**TINY_DEV, "attention_backend": "_native_cudnn"})
    check_supported(dev, ring, ContextParallel(degree=2, mode="ring"))
    with pytest.raises(ModelLoadError, match="step caches"):
        check_supported(
            dev, ModelConfig.model_validate({**TINY_DEV, "step_cache": "magcache"}), ContextParallel(degree=2)
        )
    fa3 = ModelConfig.model_validate({**TINY_DEV, "attention_backend": "fa3"})
    with pytest.raises(ModelLoadError, match=FA3_NOT_SPLIT):
        check_supported(dev, fa3, ContextParallel(degree=2))
    kv_config = ModelConfig.model_validate({**TINY_DEV, "source": "tiny-klein-kv"})
    with pytest.raises(ModelLoadError, match="Flux2KleinKVPipeline"):
        check_supported(load_pipeline(kv_config), kv_config, ContextParallel(degree=2))
    with pytest.raises(ValueError):
        ContextParallel(degree=1)


def test_serve_config_of_the_gpu_run_builds() -> None:
    """bench/multi_gpu/serve_cp.yaml: the CP model gets one {GPU: 1} bundle per rank, packed on one node."""
    from pathlib import Path

    import yaml

    from deployments.app import build_app
    from deployments.cp_server import ContextParallelFlux2Model

    path = Path(__file__).resolve().parents[2] / "bench" / "multi_gpu" / "serve_cp.yaml"
    args = yaml.safe_load(path.read_text())["applications"][0]["args"]
    build_app(args)
    options = ContextParallelFlux2Model.deployment_options(ModelConfig.model_validate(args["models"][0]))
    assert options["placement_group_bundles"] == [{"CPU": 2, "GPU": 1}] * 2
    assert options["placement_group_strategy"] == "STRICT_PACK"
    assert options["ray_actor_options"]["num_gpus"] == 1 and options["num_replicas"] == 1
    with pytest.raises(ValueError, match="no context_parallel"):
        ContextParallelFlux2Model.deployment_options(ModelConfig.model_validate(args["models"][1]))


def test_a_failed_run_breaks_the_group_but_a_refused_split_does_not() -> None:
    from deployments.engine.parallel import ContextParallelBroken, ContextParallelEngine

    engine = object.__new__(ContextParallelEngine)  # the error mapping alone, no process group
    engine.rank, engine.world_size, engine.broken = 0, 2, None

    def refused_split() -> None:
        raise AssertionError("Tensor size along dimension to be sharded must be divisible by mesh size")

    def failed() -> None:
        raise RuntimeError("NCCL error: unhandled system error")

    with pytest.raises(InvalidRequest) as refused:
        engine._guarded(refused_split)
    assert refused.value.code == "size_not_divisible" and engine.broken is None
    with pytest.raises(ContextParallelBroken):
        engine._guarded(failed)
    assert engine.broken and "NCCL error" in engine.broken
    with pytest.raises(ContextParallelBroken, match="out of step"):
        engine._guarded(lambda: None)  # refuses all work until the group is rebuilt
