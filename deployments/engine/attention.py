"""FlashAttention-3 for the FLUX.2 transformer: ``attention_backend: fa3`` (bf16) and ``fa3_fp8`` (e4m3).

diffusers' attention backends are a closed enum, so these options put processors of their own on the
transformer's attention modules: the projections, QK RMSNorm and RoPE of diffusers' ``Flux2AttnProcessor``
and ``Flux2ParallelSelfAttnProcessor``, then FA3's forward kernel (PyPI ``fa3-fwd``, Hopper only) as the
custom op ``flux2_serve::fa3_forward``, so a regionally compiled block stays one graph (``fullgraph=True``).

fp8 casts add no pass over Q or K: RMSNorm and RoPE bound every element of Q and K by
``sqrt(head_dim) * max|norm weight|`` (RMSNorm makes a row's L2 norm ``sqrt(head_dim)`` before its weight,
RoPE rotates pairs), so each is cast with one scale from that bound. No reduction over the sequence is
needed, and inductor folds the cast into the norm + RoPE kernel. V has no bound: it gets one scale per head
(its amax over the sequence), a reduction plus a cast that inductor fuses with the projection's split.
FA3's softmax and P x V also run in fp8, so the option changes the image; benchmarks report by how much.
"""

from __future__ import annotations

import importlib.util
import math

import torch
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux2 import (
    Flux2Attention,
    Flux2ParallelSelfAttention,
    _get_qkv_projections,
)

from deployments.engine.fp8 import cast_e4m3
from deployments.engine.load import ModelLoadError

FA3_BACKENDS = ("fa3", "fa3_fp8")
# FA3's processors attend over the whole sequence; diffusers' context-parallel hooks split only its backends.
FA3_NOT_SPLIT = "FA3 does not split over context_parallel ranks"


def fa3_unsupported_reason(device: torch.device | str) -> str | None:
    """Why FA3 cannot run on ``device`` (every reason, joined), or ``None`` when it can."""
    device = torch.device(device)
    reasons = []
    if device.type != "cuda" or not torch.cuda.is_available():
        reasons.append(f"FA3 needs an NVIDIA Hopper GPU (sm90); this engine runs on {device}")
    elif torch.cuda.get_device_capability(device) != (9, 0):
        major, minor = torch.cuda.get_device_capability(device)
        reasons.append(
            f"FA3's kernels are built for Hopper (sm90) only; {torch.cuda.get_device_name(device)} is sm{major}{minor}"
        )
    if importlib.util.find_spec("fa3_fwd_interface") is None:
        reasons.append("the fa3-fwd package is not installed (pip install fa3-fwd==0.0.3)")
    return "; ".join(reasons) or None


def fa3_pipeline_reason(pipeline) -> str | None:
    """Why FA3's processors cannot serve ``pipeline`` (None: they can): this build has bf16 and e4m3 kernels
    only, and the reference-KV pipeline installs its own KV-caching processors on every call."""
    if type(pipeline).__name__ == "Flux2KleinKVPipeline":
        return "FA3 attention cannot serve the reference-KV pipeline: it sets its own processors"
    if pipeline.transformer.dtype != torch.bfloat16:
        return f"FA3 attention needs a bfloat16 transformer; this one is {pipeline.transformer.dtype}"
    return None


@torch.library.custom_op("flux2_serve::fa3_forward", mutates_args=())
def fa3_forward(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    q_descale: torch.Tensor | None = None,
    k_descale: torch.Tensor | None = None,
    v_descale: torch.Tensor | None = None,
) -> torch.Tensor:
    """FA3's forward on (batch, tokens, heads, head_dim), bf16 out; e4m3 inputs take (batch, heads) float32
    descales. An opaque op to dynamo (its fake below gives the shape), so compiled blocks keep one graph."""
    from fa3_fwd_interface import flash_attn_func

    return flash_attn_func(query, key, value, q_descale=q_descale, k_descale=k_descale, v_descale=v_descale)


@fa3_forward.register_fake
def _(query, key, value, q_descale=None, k_descale=None, v_descale=None) -> torch.Tensor:
    return query.new_empty((*query.shape[:-1], value.shape[-1]), dtype=torch.bfloat16)


def rms_rope_bound(head_dim: int, *norms: torch.nn.RMSNorm) -> torch.Tensor:
    """A bound on ``|x|`` for every element of RoPE(RMSNorm(.)) through any of ``norms`` (0-dim float32):
    a normed row has L2 norm ``sqrt(head_dim)`` before its weight, and a rotation keeps each pair's norm."""
    largest = torch.stack([norm.weight.detach().abs().amax().float() for norm in norms]).amax()
    return largest * math.sqrt(head_dim)


def quantize_bounded(x: torch.Tensor, bound: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(e4m3 x, (batch, heads) descale) for (batch, tokens, heads, head_dim) ``x`` with ``|x| <= bound``."""
    x8, scale = cast_e4m3(x, bound)
    return x8, scale.expand(x.shape[0], x.shape[2]).contiguous()


def quantize_per_head(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(e4m3 x, (batch, heads) descale) with one scale per head: its amax over tokens and head_dim, taken per
    token first (many short rows in parallel; one (tokens x head_dim) reduction per head ran at 0.6 TB/s)."""
    x8, scale = cast_e4m3(x, x.abs().amax(dim=3, keepdim=True).amax(dim=1, keepdim=True))
    return x8, scale.reshape(x.shape[0], x.shape[2])


def attend(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bounds: tuple[torch.Tensor, torch.Tensor] | None
) -> torch.Tensor:
    """FA3 on RoPE'd (batch, tokens, heads, head_dim) inputs -> (batch, tokens, heads * head_dim); with Q and K
    ``bounds``, in e4m3 (Q and K scaled by their bound, V per head)."""
    if bounds is None:
        out = fa3_forward(query, key, value)
    else:
        (q8, q_descale), (k8, k_descale) = quantize_bounded(query, bounds[0]), quantize_bounded(key, bounds[1])
        v8, v_descale = quantize_per_head(value)
        out = fa3_forward(q8, k8, v8, q_descale, k_descale, v_descale)
    return out.flatten(2, 3).to(query.dtype)


class Fa3AttnProcessor:
    """``Flux2AttnProcessor`` (double-stream blocks: text and image streams) with FA3 for the attention."""

    def __init__(self, fp8: bool):
        self.fp8 = fp8

    def __call__(
        self,
        attn: Flux2Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if attention_mask is not None:
            raise ValueError("FA3 attention takes no attention mask")
        query, key, value, text_query, text_key, text_value = _get_qkv_projections(
            attn, hidden_states, encoder_hidden_states
        )
        query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
        key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
        value = value.unflatten(-1, (-1, attn.head_dim))
        q_norms, k_norms = [attn.norm_q], [attn.norm_k]
        if attn.added_kv_proj_dim is not None:
            query = torch.cat([attn.norm_added_q(text_query.unflatten(-1, (-1, attn.head_dim))), query], dim=1)
            key = torch.cat([attn.norm_added_k(text_key.unflatten(-1, (-1, attn.head_dim))), key], dim=1)
            value = torch.cat([text_value.unflatten(-1, (-1, attn.head_dim)), value], dim=1)
            q_norms.append(attn.norm_added_q)
            k_norms.append(attn.norm_added_k)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        bounds = (
            (rms_rope_bound(attn.head_dim, *q_norms), rms_rope_bound(attn.head_dim, *k_norms)) if self.fp8 else None
        )
        hidden_states = attend(query, key, value, bounds)
        if encoder_hidden_states is None:
            return attn.to_out[1](attn.to_out[0](hidden_states))
        text, hidden_states = hidden_states.split_with_sizes(
            [encoder_hidden_states.shape[1], hidden_states.shape[1] - encoder_hidden_states.shape[1]], dim=1
        )
        return attn.to_out[1](attn.to_out[0](hidden_states)), attn.to_add_out(text)


class Fa3ParallelSelfAttnProcessor:
    """``Flux2ParallelSelfAttnProcessor`` (single-stream blocks: QKV and MLP-in share one projection) with FA3."""

    def __init__(self, fp8: bool):
        self.fp8 = fp8

    def __call__(
        self,
        attn: Flux2ParallelSelfAttention,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if attention_mask is not None:
            raise ValueError("FA3 attention takes no attention mask")
        qkv, mlp = attn.to_qkv_mlp_proj(hidden_states).split(
            [3 * attn.inner_dim, attn.mlp_hidden_dim * attn.mlp_mult_factor], dim=-1
        )
        query, key, value = (t.unflatten(-1, (-1, attn.head_dim)) for t in qkv.chunk(3, dim=-1))
        query, key = attn.norm_q(query), attn.norm_k(key)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        bounds = (
            (rms_rope_bound(attn.head_dim, attn.norm_q), rms_rope_bound(attn.head_dim, attn.norm_k))
            if self.fp8
            else None
        )
        hidden_states = attend(query, key, value, bounds)
        return attn.to_out(torch.cat([hidden_states, attn.mlp_act_fn(mlp)], dim=-1))


def use_fa3_attention(pipeline, *, fp8: bool) -> int:
    """Put FA3 processors on every attention module of ``pipeline.transformer``; returns how many.

    Raises :class:`ModelLoadError` where the processors cannot serve: :func:`fa3_pipeline_reason`, or the
    fa3-fwd package fails to import (a build for another torch).
    """
    reason = fa3_pipeline_reason(pipeline)
    if reason:
        raise ModelLoadError(reason)
    transformer = pipeline.transformer
    try:
        import fa3_fwd_interface  # noqa: F401  (loads the kernels; a wrong torch ABI fails here)
    except (ImportError, OSError) as exc:
        raise ModelLoadError(f"the fa3-fwd package does not load: {exc}") from exc
    count = 0
    for module in transformer.modules():
        if isinstance(module, Flux2Attention):
            module.set_processor(Fa3AttnProcessor(fp8))
        elif isinstance(module, Flux2ParallelSelfAttention):
            module.set_processor(Fa3ParallelSelfAttnProcessor(fp8))
        else:
            continue
        count += 1
    return count
