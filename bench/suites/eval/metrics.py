"""Quality metrics: SSIM (optionally inside a region) and CLIP score; PSNR is bench/lib/deviation.py's.

SSIM is computed here with torch (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data range 255,
per channel then averaged), as a per-pixel map so it can be averaged over any region; the map uses
reflect padding so it has the image's size. CLIP score follows the usual definition
(``100 * max(cos(image, text), 0)``, as torchmetrics' ``CLIPScore``), the metric the seed used.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP preprocessing (also used by LAION checkpoints)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    taps = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(taps**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim_map(a: np.ndarray, b: np.ndarray, window: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Per-pixel SSIM (H, W) of two uint8 (H, W, 3) images, averaged over channels."""
    x = torch.from_numpy(a.astype(np.float64)).permute(2, 0, 1)[None]
    y = torch.from_numpy(b.astype(np.float64)).permute(2, 0, 1)[None]
    channels = x.shape[1]
    kernel = _gaussian_window(window, sigma).expand(channels, 1, window, window).contiguous()
    pad = window // 2
    mode = "reflect" if min(x.shape[-2:]) > pad else "replicate"

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, (pad, pad, pad, pad), mode=mode), kernel, groups=channels)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s[0].mean(0).numpy()


def dilate(region: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of an (H, W) bool array by a (2r+1)² square."""
    if radius <= 0:
        return region
    t = torch.from_numpy(region.astype(np.float32))[None, None]
    return (F.max_pool2d(t, 2 * radius + 1, stride=1, padding=radius)[0, 0] > 0).numpy()


def ssim(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float:
    """Mean SSIM of uint8 images, over ``region`` ((H, W) bool) when given."""
    values = ssim_map(a, b)
    if region is not None:
        values = values[region]
    return float(values.mean()) if values.size else float("nan")


@dataclass
class ClipScorer:
    """Text-image alignment with a CLIP model. ``meaningless`` marks randomly initialised weights."""

    model: object
    tokenizer: object
    label: str
    meaningless: bool = False
    device: str = "cpu"

    @classmethod
    def from_pretrained(cls, path_or_id: str, device: str = "cpu") -> ClipScorer:
        """A real CLIP (local folder or hub id), e.g. ``openai/clip-vit-large-patch14`` (torchmetrics' default)."""
        from transformers import AutoTokenizer, CLIPModel

        model = CLIPModel.from_pretrained(path_or_id).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(path_or_id)
        return cls(model, tokenizer, label=path_or_id, device=device)

    @classmethod
    def tiny(cls, words: list[str] | None = None, seed: int = 0) -> ClipScorer:
        """A tiny RANDOMLY INITIALISED CLIP and a word-level tokenizer, built offline: plumbing only."""
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
        from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

        specials = ["<|startoftext|>", "<|endoftext|>", "<unk>"]
        vocab = {token: i for i, token in enumerate(specials)}
        for word in sorted(set(words or [])):
            vocab.setdefault(word, len(vocab))
        backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
        backend.normalizer = normalizers.Lowercase()
        backend.pre_tokenizer = pre_tokenizers.Whitespace()
        backend.post_processor = processors.TemplateProcessing(
            single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)]
        )
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend,
            bos_token="<|startoftext|>",
            eos_token="<|endoftext|>",
            unk_token="<unk>",
            pad_token="<|endoftext|>",
        )
        torch.manual_seed(seed)
        config = CLIPConfig(
            text_config={
                "vocab_size": len(vocab),
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "max_position_embeddings": 77,
                "bos_token_id": 0,
                "eos_token_id": 1,
                "pad_token_id": 1,
            },
            vision_config={
                "image_size": 32,
                "patch_size": 8,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
            },
            projection_dim=16,
        )
        return cls(CLIPModel(config).eval(), tokenizer, label="tiny-random-clip", meaningless=True)

    def _pixels(self, image: np.ndarray) -> torch.Tensor:
        size = self.model.config.vision_config.image_size
        x = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None] / 255.0
        height, width = x.shape[-2:]
        scale = size / min(height, width)
        x = F.interpolate(
            x, size=(max(size, round(height * scale)), max(size, round(width * scale))), mode="bicubic", antialias=True
        )
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        x = x[..., top : top + size, left : left + size].clamp(0, 1)
        mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        return ((x - mean) / std).to(self.device)

    @staticmethod
    def _embedding(output) -> torch.Tensor:
        # transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    @torch.inference_mode()
    def score(self, image: np.ndarray, prompt: str) -> float:
        """CLIP score of one uint8 (H, W, 3) image against ``prompt``."""
        max_length = self.model.config.text_config.max_position_embeddings
        tokens = self.tokenizer(prompt, truncation=True, max_length=max_length, return_tensors="pt").to(self.device)
        text = self._embedding(
            self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        )
        vision = self._embedding(self.model.get_image_features(pixel_values=self._pixels(image)))
        cosine = F.cosine_similarity(text.float(), vision.float()).item()
        return 100.0 * max(cosine, 0.0)


def prompt_words(prompts: list[str]) -> list[str]:
    """The lowercase words of ``prompts`` (the tiny CLIP's vocabulary)."""
    return sorted({w for p in prompts for w in re.findall(r"\w+|[^\w\s]", p.lower())})
