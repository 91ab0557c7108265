"""FA3 attention options on CPU: refusal without a Hopper GPU, the e4m3 casts' numerics, one graph per block.

The FA3 kernel itself runs only on the GPU (``python -m bench attention``); here the code around it runs for
real: the quantisation that feeds it, the bound its Q/K scales rest on, and dynamo's trace of a block.
"""

from __future__ import annotations

import pytest
import torch
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux2 import (
    Flux2Attention,
    Flux2ParallelSelfAttention,
    Flux2PosEmbed,
)

from deployments.config import ModelConfig
from deployments.engine import Flux2Engine, ModelLoadError
from deployments.engine.attention import (
    Fa3AttnProcessor,
    Fa3ParallelSelfAttnProcessor,
    quantize_bounded,
    quantize_per_head,
    rms_rope_bound,
    use_fa3_attention,
)
from deployments.engine.optimize import check_supported
from deployments.engine.synthetic.tiny import build_tiny_klein, build_tiny_klein_kv

HEAD_DIM = 128


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def _dequantize(x8: torch.Tensor, descale: torch.Tensor) -> torch.Tensor:
    return x8.float() * descale[:, None, :, None]


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention in float64 on (batch, tokens, heads, head_dim)."""
    q, k, v = (t.double().transpose(1, 2) for t in (q, k, v))
    return torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2)


def _normed_rope(norm: torch.nn.RMSNorm, tokens: int, heads: int) -> torch.Tensor:
    """RoPE(RMSNorm(x)) as FLUX.2 computes Q and K: heads of very different size, one outlier element."""
    x = torch.randn(1, tokens, heads, HEAD_DIM) * torch.logspace(-2, 2, heads)[None, None, :, None]
    x[0, 5, 0, 7] = 1e4
    side = int(tokens**0.5)
    ids = torch.cartesian_prod(torch.zeros(1), torch.arange(side * 1.0), torch.arange(side * 1.0), torch.zeros(1))
    rope = Flux2PosEmbed(theta=2000, axes_dim=[32, 32, 32, 32])(ids)
    return apply_rotary_emb(norm(x), rope, sequence_dim=1)


@pytest.mark.parametrize("backend", ["fa3", "fa3_fp8"])
def test_fa3_refused_on_cpu_before_loading(backend: str) -> None:
    with pytest.raises(ModelLoadError, match="needs an NVIDIA Hopper GPU"):
        check_supported(ModelConfig(source="tiny-klein", attention_backend=backend), torch.device("cpu"))
    with pytest.raises(ModelLoadError, match=f"attention_backend '{backend}' is configured but cannot run here"):
        Flux2Engine.from_config(ModelConfig(source="tiny-klein", attention_backend=backend))


def test_unknown_attention_backend_is_refused_with_the_names() -> None:
    with pytest.raises(ModelLoadError, match=r"unknown attention_backend 'fa4'.*'fa3', 'fa3_fp8'"):
        check_supported(ModelConfig(source="tiny-klein", attention_backend="fa4"), torch.device("cpu"))
    check_supported(ModelConfig(source="tiny-klein", attention_backend="_native_math"), torch.device("cpu"))


def test_fa3_refuses_the_reference_kv_pipeline_and_float32() -> None:
    with pytest.raises(ModelLoadError, match="reference-KV pipeline"):
        use_fa3_attention(build_tiny_klein_kv(), fp8=True)
    with pytest.raises(ModelLoadError, match="needs a bfloat16 transformer"):
        use_fa3_attention(build_tiny_klein(), fp8=False)  # float32 on CPU


def test_per_head_scales_round_trip_within_e4m3_rounding() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 300, 6, HEAD_DIM) * torch.logspace(-3, 3, 6)[None, None, :, None]
    x8, descale = quantize_per_head(x)
    assert x8.dtype == torch.float8_e4m3fn and descale.shape == (2, 6) and descale.dtype == torch.float32
    assert torch.equal(x8.float().abs().amax(dim=(1, 3)), torch.full((2, 6), 448.0)), "each head's amax maps to 448"
    # e4m3 keeps 3 mantissa bits: half a step is 2^-4 of the value, or 2^-10 of the scale below 2^-6 (subnormals)
    error = (_dequantize(x8, descale) - x).abs()
    assert (error <= x.abs() * 2**-4 + descale[:, None, :, None] * 2**-10).all()


def test_rms_rope_bound_holds_and_its_scale_is_as_accurate_as_per_head_amax() -> None:
    torch.manual_seed(1)
    norm = torch.nn.RMSNorm(HEAD_DIM, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.5 * torch.randn(HEAD_DIM))
        norm.weight[3] = -4.0
    q, k = _normed_rope(norm, 256, 4), _normed_rope(norm, 256, 4)
    bound = rms_rope_bound(HEAD_DIM, norm, torch.nn.RMSNorm(HEAD_DIM))
    assert bound.item() == pytest.approx(4.0 * HEAD_DIM**0.5)
    assert q.abs().max() <= bound and k.abs().max() <= bound
    v = torch.randn(1, 256, 4, HEAD_DIM)
    v8 = quantize_per_head(v)
    ref = _sdpa(q, k, v)
    static = _sdpa(_dequantize(*quantize_bounded(q, bound)), _dequantize(*quantize_bounded(k, bound)), _dequantize(*v8))
    dynamic = _sdpa(_dequantize(*quantize_per_head(q)), _dequantize(*quantize_per_head(k)), _dequantize(*v8))
    assert _rel(_dequantize(*quantize_bounded(q, bound)), q) < 0.03, "a static scale keeps e4m3's relative precision"
    assert _rel(static, ref) <= 1.05 * _rel(dynamic, ref), "the bound's scale costs accuracy against per-head amax"


def test_fp8_attention_inputs_match_fp32_attention_within_e4m3_error() -> None:
    torch.manual_seed(2)
    norm = torch.nn.RMSNorm(HEAD_DIM, eps=1e-6)  # weight 1, as the random-weight models start
    q, k, v = _normed_rope(norm, 1024, 3), _normed_rope(norm, 1024, 3), torch.randn(1, 1024, 3, HEAD_DIM)
    bound = rms_rope_bound(HEAD_DIM, norm)
    out = _sdpa(
        _dequantize(*quantize_bounded(q, bound)),
        _dequantize(*quantize_bounded(k, bound)),
        _dequantize(*quantize_per_head(v)),
    )
    assert _rel(out, _sdpa(q, k, v)) < 0.06  # measured 0.045 on such inputs; FA3 adds its fp8 P x V on the GPU


@pytest.mark.parametrize("fp8", [True, False])
def test_fa3_blocks_trace_as_one_graph_around_the_kernel(fp8: bool) -> None:
    """Dynamo traces each block with FA3's processors (fake tensors, nothing runs) into one graph holding one
    FA3 call fed by e4m3 Q/K/V (fp8) or bf16 ones: regional compile's ``fullgraph=True`` holds."""
    transformer = build_tiny_klein().transformer.to(torch.bfloat16)
    blocks = {"double": transformer.transformer_blocks[0], "single": transformer.single_transformer_blocks[0]}
    captured: dict[str, tuple] = {}

    def keep(name: str):
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            captured.setdefault(name, (args, kwargs))

        return hook

    hooks = [block.register_forward_pre_hook(keep(name), with_kwargs=True) for name, block in blocks.items()]
    zero, span = torch.zeros(1, dtype=torch.long), torch.arange(4)
    ids = torch.cartesian_prod(zero, span, span, zero)
    with torch.no_grad():
        transformer(
            hidden_states=torch.randn(1, 16, 16, dtype=torch.bfloat16),
            encoder_hidden_states=torch.randn(1, 8, 48, dtype=torch.bfloat16),
            timestep=torch.full((1,), 0.5),
            img_ids=ids,
            txt_ids=torch.zeros(1, 8, 4, dtype=torch.long),
            return_dict=False,
        )  # diffusers' own processors, to capture each block's inputs
    for hook in hooks:
        hook.remove()
    for module in transformer.modules():
        if isinstance(module, Flux2Attention):
            module.set_processor(Fa3AttnProcessor(fp8))
        elif isinstance(module, Flux2ParallelSelfAttention):
            module.set_processor(Fa3ParallelSelfAttnProcessor(fp8))

    class Traced(Exception):
        pass

    graphs = []

    def backend(graph: torch.fx.GraphModule, example_inputs: list) -> None:
        graphs.append(graph)
        raise Traced  # the graph is what is checked; running it would need the GPU kernel

    want = torch.float8_e4m3fn if fp8 else torch.bfloat16
    for name, block in blocks.items():
        torch._dynamo.reset()
        args, kwargs = captured[name]
        with pytest.raises(Exception, match="Traced"), torch.no_grad():
            torch.compile(block, fullgraph=True, backend=backend)(*args, **kwargs)
        calls = [node for node in graphs[-1].graph.nodes if "fa3_forward" in str(node.target)]
        assert len(calls) == 1, f"{name} block: {len(calls)} FA3 calls in its graph"
        assert [arg.meta["example_value"].dtype for arg in calls[0].args[:3]] == [want] * 3
    torch._dynamo.reset()
