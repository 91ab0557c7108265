"""Full-size random FLUX.2 architectures: built on ``meta`` (no memory), counted, and saved/loaded."""

from __future__ import annotations

import pytest
import torch
from diffusers import Flux2KleinPipeline, Flux2Pipeline

from deployments.engine.synthetic.random_weights import (
    PIPELINE_CLASS,
    build_random_pipeline,
    build_tokenizer,
    count_parameters,
    save_random_pipeline,
)

# (transformer, text encoder) parameter counts in billions, from the published checkpoints
EXPECTED = {
    "random-dev": (32.2, 24.0),  # FLUX.2-dev + Mistral-Small-3.x 24B
    "random-klein-4b": (3.9, 4.0),  # klein-4B + Qwen3-4B
    "random-klein-9b": (9.1, 8.2),  # klein-9B + Qwen3-8B
}


@pytest.mark.parametrize("source", sorted(EXPECTED))
def test_full_size_architecture_on_meta(source: str) -> None:
    pipeline = build_random_pipeline(source, device="meta")
    transformer_b, text_encoder_b = EXPECTED[source]
    assert count_parameters(pipeline.transformer) / 1e9 == pytest.approx(transformer_b, abs=0.06)
    assert count_parameters(pipeline.text_encoder) / 1e9 == pytest.approx(text_encoder_b, abs=0.06)
    assert 80e6 < count_parameters(pipeline.vae) < 90e6
    assert type(pipeline).__name__ == PIPELINE_CLASS[source]
    assert pipeline.transformer.dtype == torch.bfloat16
    assert next(pipeline.transformer.parameters()).device.type == "meta"
    # the text encoder's hidden size x 3 stacked layers feeds the transformer's context embedder
    hidden = pipeline.text_encoder.config.get_text_config().hidden_size
    assert pipeline.transformer.config.joint_attention_dim == 3 * hidden
    assert pipeline.transformer.config.guidance_embeds == (source == "random-dev")


def test_default_dtype_is_restored() -> None:
    before = torch.get_default_dtype()
    build_random_pipeline("random-klein-4b", device="meta", components=("transformer",))
    assert torch.get_default_dtype() == before


def test_components_can_be_left_out() -> None:
    pipeline = build_random_pipeline("random-dev", device="meta", components=("transformer",))
    assert pipeline.text_encoder is None and pipeline.vae is None
    assert isinstance(pipeline, Flux2Pipeline)


@pytest.mark.parametrize("source", ["random-dev", "random-klein-4b"])
def test_tokenizer_pads_prompts_to_512(source: str) -> None:
    tokenizer = build_tokenizer(source)
    ids = tokenizer("a photo of a red car", padding="max_length", max_length=512, truncation=True)["input_ids"]
    assert len(ids) == 512
    assert max(ids) < 64  # word-level vocabulary, far inside the real vocab size


def test_unknown_source_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown random source"):
        build_random_pipeline("random-nope", device="meta")


def test_save_pretrained_round_trip(tmp_path) -> None:
    """The saving helper writes a folder that from_pretrained reads back (tiny pipeline, same path)."""
    from deployments.engine.synthetic.tiny import build_tiny_klein

    pipeline = build_tiny_klein()
    info = save_random_pipeline("random-klein-4b", tmp_path / "pipe", pipeline=pipeline)
    assert info["bytes"] > 0 and (tmp_path / "pipe" / "model_index.json").is_file()
    loaded = Flux2KleinPipeline.from_pretrained(tmp_path / "pipe")
    for name, param in pipeline.transformer.state_dict().items():
        assert torch.equal(param, loaded.transformer.state_dict()[name])

    info = save_random_pipeline("random-klein-4b", tmp_path / "transformer", pipeline=pipeline, component="transformer")
    assert (tmp_path / "transformer" / "config.json").is_file()
