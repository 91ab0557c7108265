"""The text encoder cut to what FLUX.2 reads of it: no layer after the deepest hidden state, no LM head.

The FLUX.2 pipelines stack three hidden states of their language model (``text_encoder_out_layers``: 9, 18
and 27 of Qwen3's 36 layers for klein, 10, 20 and 30 of Mistral-Small's 40 for dev) and never read the
logits. A causal decoder's hidden state k depends on layers 0..k-1 alone, so the later layers, the final
norm and the LM head only cost time and memory: removing them leaves every prompt embedding bit for bit
as it was (tests/unit/test_text_encoder.py). transformers returns the last hidden state after the final
norm, so where layers go the norm goes too: hidden state k is read before any norm, as in the full model.
"""

from __future__ import annotations

import inspect
import logging

import torch
from diffusers import DiffusionPipeline

logger = logging.getLogger(__name__)


def deepest_layer_read(pipeline: DiffusionPipeline) -> int:
    """The deepest hidden state the pipeline's prompt encoding reads (its default ``text_encoder_out_layers``)."""
    layers = inspect.signature(type(pipeline).encode_prompt).parameters["text_encoder_out_layers"].default
    return max(layers)


def trim_text_encoder(pipeline: DiffusionPipeline) -> int:
    """Drop the text encoder's unread layers, final norm and LM head in place; returns the parameters freed."""
    text_encoder = pipeline.text_encoder
    before = sum(parameter.numel() for parameter in text_encoder.parameters())
    decoder = text_encoder.get_decoder()  # the language model, also inside Mistral-3's vision-language model
    keep = deepest_layer_read(pipeline)
    if len(decoder.layers) > keep:
        del decoder.layers[keep:]
        decoder.config.num_hidden_layers = keep  # the forward loops over layers[: num_hidden_layers]
        if getattr(decoder.config, "layer_types", None):
            decoder.config.layer_types = decoder.config.layer_types[:keep]
        decoder.norm = torch.nn.Identity()
    if isinstance(getattr(text_encoder, "lm_head", None), torch.nn.Linear):
        text_encoder.lm_head = torch.nn.Identity()  # logits nobody reads (a tied head's weights stay, embedded)
    freed = before - sum(parameter.numel() for parameter in text_encoder.parameters())
    logger.info("text encoder: %d layers kept, %.3fB parameters freed", len(decoder.layers), freed / 1e9)
    return freed
