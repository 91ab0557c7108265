"""The trimmed text encoder gives the same prompt embeddings, bit for bit, with fewer layers and no LM head."""

from __future__ import annotations

import copy

import pytest
import torch

from deployments.config import ModelConfig
from deployments.engine.load import load_pipeline
from deployments.engine.synthetic.tiny import build_tiny_dev, build_tiny_klein
from deployments.engine.text_encoder import deepest_layer_read, trim_text_encoder

PROMPTS = ["a red car in front of a house", "a much longer prompt about a cat that sits on a mat in the sun"]


def with_full_depth(pipeline, layers: int):
    """The tiny pipeline with a text encoder as deep as the real model's (36 Qwen3 / 40 Mistral layers), so
    the deepest hidden state read is an inner one, as it is in the real models."""
    config = copy.deepcopy(pipeline.text_encoder.config)
    text = config.get_text_config()
    text.num_hidden_layers = layers
    if getattr(text, "layer_types", None):
        text.layer_types = [text.layer_types[0]] * layers
    torch.manual_seed(1)
    pipeline.text_encoder = type(pipeline.text_encoder)(config).eval()
    return pipeline


@pytest.mark.parametrize(("build", "layers"), [(build_tiny_klein, 36), (build_tiny_dev, 40)])
def test_trimmed_text_encoder_gives_the_same_prompt_embeddings(build, layers: int) -> None:
    pipeline = with_full_depth(build(), layers)
    with torch.inference_mode():
        before = pipeline.encode_prompt(PROMPTS, device="cpu", max_sequence_length=64)[0].clone()
    text_encoder = pipeline.text_encoder
    params_before = sum(p.numel() for p in text_encoder.parameters())
    freed = trim_text_encoder(pipeline)
    with torch.inference_mode():
        after = pipeline.encode_prompt(PROMPTS, device="cpu", max_sequence_length=64)[0]
    assert torch.equal(after, before)
    assert len(text_encoder.get_decoder().layers) == deepest_layer_read(pipeline) < layers
    assert isinstance(text_encoder.get_decoder().norm, torch.nn.Identity)
    assert freed == params_before - sum(p.numel() for p in text_encoder.parameters()) > 0


def test_a_text_encoder_without_unread_layers_keeps_them_all() -> None:
    pipeline = build_tiny_klein()  # 27 layers: hidden state 27 is its last, read after the final norm
    with torch.inference_mode():
        before = pipeline.encode_prompt(PROMPTS, device="cpu", max_sequence_length=64)[0].clone()
    trim_text_encoder(pipeline)
    decoder = pipeline.text_encoder.get_decoder()
    assert len(decoder.layers) == 27 and not isinstance(decoder.norm, torch.nn.Identity)
    with torch.inference_mode():
        assert torch.equal(pipeline.encode_prompt(PROMPTS, device="cpu", max_sequence_length=64)[0], before)


def test_loaded_pipelines_are_trimmed() -> None:
    loaded = load_pipeline(ModelConfig(source="tiny-klein"))
    assert isinstance(loaded.pipeline.text_encoder.lm_head, torch.nn.Identity)
