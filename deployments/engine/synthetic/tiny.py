"""Tiny, randomly initialised FLUX.2 pipelines, built fully offline in well under a second.

They run the real diffusers pipeline code (text encoder, transformer, VAE, scheduler) with toy
widths, so every code path of the service is exercised on a CPU. Their images are noise: anything
served from them is labelled ``random-tiny``.

The VAE has four levels like the real ``AutoencoderKLFlux2`` (scale factor 8, sizes snap to 16).
Tokenizers are word-level tokenizers built in memory, with chat templates shaped like the real
Mistral-3 (dev) and Qwen3 (klein) ones, since the pipelines call ``apply_chat_template``.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKLFlux2,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinKVPipeline,
    Flux2KleinPipeline,
    Flux2Pipeline,
    Flux2Transformer2DModel,
)
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    Mistral3Config,
    Mistral3ForConditionalGeneration,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

_WORDS = [
    "a",
    "an",
    "the",
    "of",
    "in",
    "on",
    "with",
    "and",
    "or",
    "to",
    "into",
    "from",
    "make",
    "turn",
    "change",
    "add",
    "remove",
    "replace",
    "keep",
    "it",
    "its",
    "red",
    "green",
    "blue",
    "yellow",
    "black",
    "white",
    "dog",
    "cat",
    "person",
    "car",
    "house",
    "tree",
    "sky",
    "background",
    "photo",
    "image",
    "painting",
    "style",
    "sketch",
    "watercolor",
    "cartoon",
    "sunset",
    "night",
    "day",
    "1",
    "2",
    "3",
    "4",
]
_TE_HIDDEN = 16
_OUT_LAYERS = 3  # both pipelines stack three text-encoder hidden states
_SPECIAL_PATTERN = r"(<\|[a-z_]+\|>|\[/?[A-Z_]+\]|<[a-z/]+>)"

QWEN3_TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant "
    "{% if enable_thinking is defined and not enable_thinking %}<think> </think> {% endif %}{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}[SYSTEM_PROMPT] {% for c in m['content'] %}{{ c['text'] }} "
    "{% endfor %}[/SYSTEM_PROMPT] "
    "{% elif m['role'] == 'user' %}[INST] {% for c in m['content'] %}"
    "{% if c['type'] == 'text' %}{{ c['text'] }} {% else %}[IMG] {% endif %}{% endfor %}[/INST] "
    "{% endif %}{% endfor %}"
)


def _word_tokenizer(
    specials: list[str], *, unk: str, pad: str, chat_template: str, bos: str | None = None, eos: str | None = None
) -> PreTrainedTokenizerFast:
    vocab: dict[str, int] = {}
    for token in [*specials, *_WORDS]:
        vocab.setdefault(token, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(_SPECIAL_PATTERN, behavior="isolated"), pre_tokenizers.WhitespaceSplit()]
    )
    backend.add_special_tokens(specials)
    extra = {k: v for k, v in {"bos_token": bos, "eos_token": eos}.items() if v}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token=unk, pad_token=pad, padding_side="right", **extra
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def qwen3_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level stand-in for klein's Qwen3 tokenizer, with its special tokens and chat template."""
    return _word_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "user", "assistant", "system"],
        unk="<|endoftext|>",
        pad="<|endoftext|>",
        eos="<|im_end|>",
        chat_template=QWEN3_TEMPLATE,
    )


def mistral_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level stand-in for dev's Mistral-3 tokenizer; ids 0..4 are <unk>, [IMG], <s>, </s>, <pad>."""
    return _word_tokenizer(
        [
            "<unk>",
            "[IMG]",
            "<s>",
            "</s>",
            "<pad>",
            "[IMG_BREAK]",
            "[IMG_END]",
            "[INST]",
            "[/INST]",
            "[SYSTEM_PROMPT]",
            "[/SYSTEM_PROMPT]",
        ],
        unk="<unk>",
        pad="<pad>",
        bos="<s>",
        eos="</s>",
        chat_template=MISTRAL_TEMPLATE,
    )


def _transformer(guidance_embeds: bool) -> Flux2Transformer2DModel:
    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=_OUT_LAYERS * _TE_HIDDEN,
        timestep_guidance_channels=256,
        axes_dims_rope=[4, 4, 4, 4],
        guidance_embeds=guidance_embeds,
    )


def _vae() -> AutoencoderKLFlux2:
    return AutoencoderKLFlux2(
        sample_size=64,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 4, 4, 4),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def build_tiny_klein(seed: int = 0) -> Flux2KleinPipeline:
    """A klein-style pipeline (Qwen3 text encoder, no guidance embedding, distilled: no CFG)."""
    torch.manual_seed(seed)
    # 27 layers so the pipeline's default text_encoder_out_layers (9, 18, 27) exist.
    text_encoder = Qwen3ForCausalLM(
        Qwen3Config(
            intermediate_size=16,
            hidden_size=_TE_HIDDEN,
            num_hidden_layers=27,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=8,
            vocab_size=256,
            max_position_embeddings=512,
        )
    )
    return Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae(),
        text_encoder=text_encoder,
        tokenizer=qwen3_tokenizer(),
        transformer=_transformer(guidance_embeds=False),
        is_distilled=True,
    )


def build_tiny_dev(seed: int = 0) -> Flux2Pipeline:
    """A dev-style pipeline (Mistral-3 text encoder, embedded guidance)."""
    torch.manual_seed(seed)
    # 30 layers so the pipeline's default text_encoder_out_layers (10, 20, 30) exist.
    text_encoder = Mistral3ForConditionalGeneration(
        Mistral3Config(
            text_config={
                "model_type": "mistral",
                "vocab_size": 256,
                "hidden_size": _TE_HIDDEN,
                "intermediate_size": 37,
                "max_position_embeddings": 1024,
                "num_attention_heads": 4,
                "num_hidden_layers": 30,
                "num_key_value_heads": 2,
                "rms_norm_eps": 1e-05,
                "rope_theta": 1e9,
                "sliding_window": None,
                "bos_token_id": 2,
                "eos_token_id": 3,
                "pad_token_id": 4,
            },
            vision_config={
                "model_type": "pixtral",
                "hidden_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 4,
                "intermediate_size": 37,
                "image_size": 30,
                "patch_size": 6,
                "num_channels": 3,
            },
            bos_token_id=2,
            eos_token_id=3,
            pad_token_id=4,
            image_seq_length=4,
            vision_feature_layer=-1,
            image_token_index=1,
        )
    )
    return Flux2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae(),
        text_encoder=text_encoder,
        tokenizer=mistral_tokenizer(),
        transformer=_transformer(guidance_embeds=True),
    )


def build_tiny_klein_kv(seed: int = 0) -> Flux2KleinKVPipeline:
    """The tiny klein weights behind the reference-KV-caching pipeline (reference K/V computed once)."""
    return Flux2KleinKVPipeline(**build_tiny_klein(seed).components)


TINY_BUILDERS = {"tiny-dev": build_tiny_dev, "tiny-klein": build_tiny_klein, "tiny-klein-kv": build_tiny_klein_kv}
