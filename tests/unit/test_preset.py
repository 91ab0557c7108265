"""``preset: fast`` fills in what runs here, says why it leaves the rest, and never overrides a set key."""

from __future__ import annotations

import logging

import pytest

from deployments.config import ModelConfig
from deployments.engine import Flux2Engine
from deployments.engine import preset as preset_module
from deployments.engine.load import load_pipeline
from deployments.engine.preset import resolve_preset
from deployments.types import ImageRequest


@pytest.fixture
def capable_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A device on which fp8 and FA3 both run, as on an H200 with fa3-fwd (the choice logic, not the kernels)."""
    monkeypatch.setattr(preset_module, "fp8_unsupported_reason", lambda device: None)
    monkeypatch.setattr(preset_module, "fa3_unsupported_reason", lambda device: None)


def test_on_a_cpu_the_fast_preset_keeps_the_defaults_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="deployments.engine.preset"):
        engine = Flux2Engine.from_config(ModelConfig(source="tiny-klein", preset="fast"))
    assert (engine.info.quantization, engine.info.attention_backend) == ("none", "default")
    warnings = " ".join(record.getMessage() for record in caplog.records)
    assert "quantization stays 'none': fp8 quantization needs an NVIDIA GPU" in warnings
    assert "attention_backend stays None" in warnings
    image = engine.generate(ImageRequest(prompt="a red car", width=64, height=64, seed=0)).images[0]
    assert image.shape == (64, 64, 3)  # and it serves


def test_where_everything_runs_the_preset_picks_fp8_and_fa3_fp8(capable_gpu: None) -> None:
    config = ModelConfig(source="tiny-klein", dtype="bfloat16", preset="fast")
    resolved = resolve_preset(config, load_pipeline(config))
    assert (resolved.quantization, resolved.attention_backend) == ("fp8", "fa3_fp8")
    assert resolved.model_dump(exclude={"quantization", "attention_backend"}) == config.model_dump(
        exclude={"quantization", "attention_backend"}
    )


def test_keys_set_in_the_config_win_over_the_preset(capable_gpu: None) -> None:
    config = ModelConfig.model_validate(
        {"source": "tiny-klein", "dtype": "bfloat16", "preset": "fast", "quantization": "none"}
    )
    resolved = resolve_preset(config, load_pipeline(config))
    assert (resolved.quantization, resolved.attention_backend) == ("none", "fa3_fp8")


@pytest.mark.parametrize(
    ("overrides", "split", "reason"),
    [
        ({"source": "tiny-klein-kv", "dtype": "bfloat16"}, False, "reference-KV pipeline"),
        ({"source": "tiny-klein", "dtype": "float32"}, False, "needs a bfloat16 transformer"),
        ({"source": "tiny-klein", "dtype": "bfloat16"}, True, "context_parallel"),
    ],
)
def test_fa3_is_left_out_where_it_cannot_serve(
    capable_gpu: None, caplog: pytest.LogCaptureFixture, overrides: dict, split: bool, reason: str
) -> None:
    config = ModelConfig(preset="fast", **overrides)
    with caplog.at_level(logging.WARNING, logger="deployments.engine.preset"):
        resolved = resolve_preset(config, load_pipeline(config), split_over_ranks=split)
    assert (resolved.quantization, resolved.attention_backend) == ("fp8", None)
    assert reason in caplog.text


def test_no_preset_changes_nothing() -> None:
    config = ModelConfig(source="tiny-klein")
    assert resolve_preset(config, load_pipeline(config)) == config
