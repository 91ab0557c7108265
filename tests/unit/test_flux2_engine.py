"""Engine tests: the Ray-free Flux2Engine on the tiny offline pipelines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deployments.config import ModelConfig, Shape
from deployments.engine import Flux2Engine, warm_up
from deployments.engine.memory import MemoryManager
from deployments.engine.warmup import COMPILE_PHASES
from deployments.errors import InvalidRequest, Overloaded
from deployments.types import ImageRequest


def references(count: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    sizes = [(64, 64), (96, 80), (80, 112)]
    return tuple(rng.integers(0, 256, (*sizes[i % 3], 3), dtype=np.uint8) for i in range(count))


@pytest.fixture(scope="module", params=["tiny-dev", "tiny-klein"])
def engine(request: pytest.FixtureRequest) -> Flux2Engine:
    return Flux2Engine.from_config(ModelConfig(source=request.param))


def test_engine_describes_itself_as_demo(engine: Flux2Engine) -> None:
    info = engine.info
    assert info.weights == "random-tiny" and info.is_demo
    assert info.family in ("dev", "klein")
    assert info.device == "cpu" and info.compile == "none"


@pytest.mark.parametrize("refs", [1, 3])
def test_edit_returns_requested_size(engine: Flux2Engine, refs: int) -> None:
    result = engine.generate(ImageRequest(prompt="make it red", width=96, height=64, images=references(refs), seed=1))
    assert len(result.images) == 1
    assert result.images[0].shape == (64, 96, 3) and result.images[0].dtype == np.uint8
    assert result.images[0].std() > 0  # not a blank frame


def test_text_to_image_and_n(engine: Flux2Engine) -> None:
    result = engine.generate(ImageRequest(prompt="a cat", width=64, height=128, n=2, seed=3))
    assert [image.shape for image in result.images] == [(128, 64, 3), (128, 64, 3)]
    assert not np.array_equal(result.images[0], result.images[1])  # each image has its own seed


def test_same_seed_same_bytes_other_seed_differs(engine: Flux2Engine) -> None:
    request = ImageRequest(prompt="a dog", width=64, height=64, images=references(1), seed=42)
    first, again = engine.generate(request), engine.generate(request)
    other = engine.generate(ImageRequest(prompt="a dog", width=64, height=64, images=references(1), seed=43))
    assert np.array_equal(first.images[0], again.images[0])
    assert not np.array_equal(first.images[0], other.images[0])


def test_image_i_of_a_batch_is_reproducible_with_seed_plus_i(engine: Flux2Engine) -> None:
    batch = engine.generate(ImageRequest(prompt="a car", width=64, height=64, n=2, seed=10))
    single = engine.generate(ImageRequest(prompt="a car", width=64, height=64, n=1, seed=11))
    assert np.abs(batch.images[1].astype(int) - single.images[0].astype(int)).max() <= 2


def test_steps_and_guidance_defaults_and_overrides(engine: Flux2Engine) -> None:
    default = engine.generate(ImageRequest(prompt="a cat", width=64, height=64))
    assert default.num_inference_steps == engine.default_steps == 4
    custom = engine.generate(ImageRequest(prompt="a cat", width=64, height=64, num_inference_steps=2, guidance_scale=2))
    assert custom.num_inference_steps == 2 and custom.guidance_scale == 2


def test_warm_up_of_an_engine_that_compiles_nothing_runs_each_shape_once() -> None:
    shapes = (Shape(width=64, height=64, references=1), Shape(width=128, height=64, references=0))
    engine = Flux2Engine.from_config(ModelConfig(source="tiny-klein", warmup_shapes=shapes))
    times = warm_up(engine)
    assert {key for key in times if not key.startswith("compile:")} == {
        "64x64+1ref:first",
        "128x64+0ref:first",
        "general-decode",
    }
    assert [times[f"compile:{phase}"] for phase in COMPILE_PHASES] == [0, 0, 0]
    assert engine.warm_shapes == {(64, 64, 1), (128, 64, 0)}
    assert engine.info.warmup_s > 0


def test_unwarmed_shape_rejected_when_configured() -> None:
    config = ModelConfig(source="tiny-klein", compile="none", unwarmed_shapes="reject")
    engine = Flux2Engine.from_config(config)
    warm_up(engine, (Shape(width=64, height=64),))
    engine.compile = "regional"  # as if compiled: shape policing only applies to compiled engines
    engine.generate(ImageRequest(prompt="a cat", width=64, height=64))
    with pytest.raises(InvalidRequest) as err:
        engine.generate(ImageRequest(prompt="a cat", width=128, height=64))
    assert err.value.code == "shape_not_warmed" and err.value.param == "size"


def test_unwarmed_shape_compiles_once_and_is_counted() -> None:
    engine = Flux2Engine.from_config(ModelConfig(source="tiny-klein"))
    warm_up(engine, (Shape(width=64, height=64),))
    engine.compile = "regional"
    for _ in range(2):
        engine.generate(ImageRequest(prompt="a cat", width=128, height=64))
    assert engine.unwarmed_compiles == 1


class FlakyOOM:
    """Raises CUDA OOM for the first ``failures`` calls, then answers."""

    def __init__(self, failures: int):
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return "ok"


def test_oom_is_retried_once_after_freeing_memory() -> None:
    memory = MemoryManager(torch.device("cpu"))
    flaky = FlakyOOM(failures=1)
    assert memory.run(flaky) == "ok"
    assert flaky.calls == 2 and memory.oom_recoveries == 1 and memory.cache_releases == 1


def test_second_oom_becomes_retryable_503() -> None:
    memory = MemoryManager(torch.device("cpu"))
    with pytest.raises(Overloaded) as err:
        memory.run(FlakyOOM(failures=2))
    assert err.value.code == "gpu_out_of_memory" and err.value.retry_after_s > 0
    assert memory.run(FlakyOOM(failures=0)) == "ok"  # still usable


def test_engine_survives_injected_oom(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Flux2Engine.from_config(ModelConfig(source="tiny-dev"))
    real = engine._run_pipeline
    state = {"calls": 0}

    def oom_once(*args, **kwargs):
        state["calls"] += 1
        if state["calls"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "_run_pipeline", oom_once)
    result = engine.generate(ImageRequest(prompt="a cat", width=64, height=64))
    assert result.images[0].shape == (64, 64, 3) and engine.memory.oom_recoveries == 1


@pytest.mark.parametrize("policy,releases", [("always", 1), ("on_pressure", 0), ("never", 0)])
def test_vram_policy_releases_per_policy(policy: str, releases: int) -> None:
    memory = MemoryManager(torch.device("cpu"), policy=policy)
    memory.after_request()
    assert memory.cache_releases == releases
