"""bench/lib/floors.py on the tiny transformer: a step's FLOPs, split into the linears and attention."""

from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from bench.lib.floors import count_step_flops, step_inputs
from deployments.engine.synthetic.tiny import build_tiny_klein


def test_flops_split_counts_attention_exactly() -> None:
    model = build_tiny_klein().transformer.requires_grad_(False)
    refs, text_tokens = 1, 8
    inputs = step_inputs(model.config, 64, 64, refs, text_tokens=text_tokens, device="cpu", dtype=model.dtype)
    flops = count_step_flops(model, inputs)
    tokens = (1 + refs) * (64 // 16) ** 2 + text_tokens
    heads, head_dim = model.config.num_attention_heads, model.config.attention_head_dim
    layers = model.config.num_layers + model.config.num_single_layers
    assert flops["attention"] == 4 * tokens**2 * head_dim * heads * layers  # QK^T and AV, 2 FLOPs a MAC
    assert flops["total"] == flops["matmul"] + flops["attention"]
    # torch counts the CPU's fused attention kernel as nothing: what it counts then is the linears alone
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        model(**inputs)
    assert flops["matmul"] == counter.get_total_flops() > 0
