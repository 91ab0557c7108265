"""Full-size FLUX.2 pipelines with random weights, built directly on the target device.

For GPU benchmarks where the real weights are not available: the transformer, text encoder and VAE
have the real architectures and sizes (configs from the published checkpoints), so every matmul,
attention and memory figure is the real one; only the numbers in the weights are random, so the
images are noise. Tokenizers are built offline (word-level, with the real chat-template shapes),
and the pipelines pad prompts to 512 tokens anyway, so the text encoder sees the real sequence length.

Building is fast: modules are constructed under ``torch.device(device)`` with the target default
dtype, so parameters are allocated and randomly initialised on the GPU in bf16 (no CPU float32
init, no copy). On the ``meta`` device nothing is allocated at all (parameter counting in tests).

``save_random_pipeline`` writes a pipeline (or one component) with ``save_pretrained``, so the real
loading path (local folder -> ``from_pretrained``) can be measured on random weights.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLFlux2,
    DiffusionPipeline,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinPipeline,
    Flux2Pipeline,
    Flux2Transformer2DModel,
)
from transformers import Mistral3Config, Mistral3ForConditionalGeneration, Qwen3Config, Qwen3ForCausalLM

from deployments.engine.synthetic.tiny import mistral_tokenizer, qwen3_tokenizer

logger = logging.getLogger(__name__)

# Transformer configs of the published checkpoints (all: head_dim 128, in_channels 128, mlp_ratio 3).
TRANSFORMER_CONFIGS: dict[str, dict] = {
    "random-dev": dict(
        num_layers=8,
        num_single_layers=48,
        num_attention_heads=48,
        joint_attention_dim=15360,
        guidance_embeds=True,
    ),
    "random-klein-4b": dict(
        num_layers=5,
        num_single_layers=20,
        num_attention_heads=24,
        joint_attention_dim=7680,
        guidance_embeds=False,
    ),
    "random-klein-9b": dict(
        num_layers=8,
        num_single_layers=24,
        num_attention_heads=32,
        joint_attention_dim=12288,
        guidance_embeds=False,
    ),
}
_TRANSFORMER_COMMON = dict(
    patch_size=1,
    in_channels=128,
    attention_head_dim=128,
    timestep_guidance_channels=256,
    mlp_ratio=3.0,
    axes_dims_rope=(32, 32, 32, 32),
    rope_theta=2000,
    eps=1e-6,
)

# Qwen3-4B / Qwen3-8B (klein text encoders); joint_attention_dim = 3 x hidden_size.
QWEN3_CONFIGS: dict[str, dict] = {
    "random-klein-4b": dict(hidden_size=2560, intermediate_size=9728, tie_word_embeddings=True),
    "random-klein-9b": dict(hidden_size=4096, intermediate_size=12288, tie_word_embeddings=False),
}
_QWEN3_COMMON = dict(
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=151936,
    max_position_embeddings=40960,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
)

# Mistral-Small-3.x 24B (dev text encoder, with its Pixtral vision tower). Special-token ids match
# the offline tokenizer below (<unk>=0, [IMG]=1, <s>=2, </s>=3, <pad>=4).
MISTRAL3_TEXT = dict(
    model_type="mistral",
    vocab_size=131072,
    hidden_size=5120,
    intermediate_size=32768,
    num_hidden_layers=40,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    rope_theta=1_000_000_000.0,
    sliding_window=None,
    tie_word_embeddings=False,
    bos_token_id=2,
    eos_token_id=3,
    pad_token_id=4,
)
MISTRAL3_VISION = dict(
    model_type="pixtral",
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    head_dim=64,
    image_size=1540,
    patch_size=14,
    num_channels=3,
    rope_theta=10000.0,
)

# The FLUX.2 scheduler config (dynamic shifting with the empirical mu the pipelines compute).
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
    time_shift_type="exponential",
)

PIPELINE_CLASS = {
    "random-dev": "Flux2Pipeline",
    "random-klein-4b": "Flux2KleinPipeline",
    "random-klein-9b": "Flux2KleinPipeline",
}


def _check_source(source: str) -> None:
    if source not in TRANSFORMER_CONFIGS:
        raise ValueError(f"unknown random source {source!r}; expected one of {sorted(TRANSFORMER_CONFIGS)}")


@contextlib.contextmanager
def _building_on(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """Allocate (and randomly initialise) new parameters on ``device`` in ``dtype``."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def transformer_config(source: str) -> dict:
    _check_source(source)
    return {**_TRANSFORMER_COMMON, **TRANSFORMER_CONFIGS[source]}


def build_transformer(source: str, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16):
    with _building_on(device, dtype):
        return Flux2Transformer2DModel(**transformer_config(source)).eval().requires_grad_(False)


def build_text_encoder(source: str, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16):
    _check_source(source)
    with _building_on(device, dtype):
        if source == "random-dev":
            config = Mistral3Config(
                text_config=MISTRAL3_TEXT,
                vision_config=MISTRAL3_VISION,
                image_token_index=1,
                spatial_merge_size=2,
                multimodal_projector_bias=False,
                projector_hidden_act="gelu",
                vision_feature_layer=-1,
                tie_word_embeddings=False,
                bos_token_id=2,
                eos_token_id=3,
                pad_token_id=4,
            )
            model = Mistral3ForConditionalGeneration(config)
        else:
            model = Qwen3ForCausalLM(Qwen3Config(**_QWEN3_COMMON, **QWEN3_CONFIGS[source]))
    return model.eval().requires_grad_(False)


def build_vae(*, device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16) -> AutoencoderKLFlux2:
    with _building_on(device, dtype):
        return AutoencoderKLFlux2().eval().requires_grad_(False)


def build_tokenizer(source: str):
    _check_source(source)
    return mistral_tokenizer() if source == "random-dev" else qwen3_tokenizer()


def build_random_pipeline(
    source: str,
    *,
    device: torch.device | str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    components: tuple[str, ...] = ("transformer", "text_encoder", "vae"),
) -> DiffusionPipeline:
    """The full-size pipeline named by ``source`` with random weights, allocated on ``device``.

    ``components`` leaves out the big modules that are not asked for (``None`` in their slots), e.g.
    a transformer-only pipeline to count or save the transformer alone.
    """
    _check_source(source)
    start = time.perf_counter()
    torch.manual_seed(seed)
    transformer = build_transformer(source, device=device, dtype=dtype) if "transformer" in components else None
    text_encoder = build_text_encoder(source, device=device, dtype=dtype) if "text_encoder" in components else None
    vae = build_vae(device=device, dtype=dtype) if "vae" in components else None
    parts = dict(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build_tokenizer(source),
        transformer=transformer,
    )
    if source == "random-dev":
        pipeline: DiffusionPipeline = Flux2Pipeline(**parts)
    else:  # the klein-4B / 9B checkpoints are the step-distilled ones (4 steps, no CFG)
        pipeline = Flux2KleinPipeline(**parts, is_distilled=True)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    logger.info("built %s (%s) on %s in %.1fs", source, components, device, time.perf_counter() - start)
    return pipeline


def count_parameters(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def save_random_pipeline(
    source: str,
    path: str | Path,
    *,
    device: torch.device | str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    component: str | None = None,
    pipeline: DiffusionPipeline | None = None,
) -> dict[str, float]:
    """Write random weights with ``save_pretrained``: the whole pipeline, or one ``component``.

    A whole pipeline lands as a folder ``load_pipeline`` (``source=<folder>``) and
    ``Flux2Pipeline.from_pretrained`` read; a component (e.g. ``transformer``) as a model folder for
    ``Flux2Transformer2DModel.from_pretrained``. Returns build/save seconds and bytes written.
    """
    path = Path(path)
    t0 = time.perf_counter()
    if pipeline is None:
        components = (component,) if component else ("transformer", "text_encoder", "vae")
        pipeline = build_random_pipeline(source, device=device, dtype=dtype, components=components)
    built = time.perf_counter()
    target = getattr(pipeline, component) if component else pipeline
    target.save_pretrained(path)
    saved = time.perf_counter()
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {"build_s": built - t0, "save_s": saved - built, "bytes": float(size)}
