"""What the transformer is conditioned on, each computed once: prompt embeddings and reference latents.

Both caches are exact: a hit hands the pipeline the tensor a miss computed with the pipeline's own code, so the
image is the same bytes, and both live on the model's device, bounded in bytes (``prompt_cache_mb``,
``latent_cache_mb``).

**Prompts.** The engine calls ``pipeline.encode_prompt`` itself, once per distinct prompt of a call, and passes
``prompt_embeds=`` (and klein-base's ``negative_prompt_embeds=``, the empty prompt its CFG encodes): the pipeline's
``encode_prompt`` then repeats them ``num_images_per_prompt`` times exactly as it repeats its own. A prompt is always
encoded alone (a batch of one), so its embedding does not depend on which requests share a call; on the CPU a row of
a batched encode was measured equal to the single encode, bit for bit (tests/unit/test_conditioning.py). The key is
the prompt text: the cache belongs to one engine (one model, one text encoder, the pipeline's default sequence length
and layers), and LoRA adapters are not part of it because their slots sit in the transformer only
(``deployments.engine.adapters``): no adapter changes what the text encoder computes.

**References.** diffusers 0.42.1 preprocesses each reference (``image_processor.preprocess``) in ``__call__`` and
encodes it in ``prepare_image_latents`` by one ``_encode_vae_image`` call per image, in order; the latents of one
image depend on its pixels alone (the posterior's argmax: no generator is used). For one pipeline call,
:meth:`Conditioning.references` shadows ``_encode_vae_image`` on the pipeline instance: the i-th call returns the
latents kept for reference i, or encodes it and keeps them. A reference already kept is handed to the pipeline as a
64x64 stand-in, so its preprocessing (tens of ms at 1024x1024) is skipped too: the preprocessed tensor is read only
by ``_encode_vae_image``, which returns the kept latents instead, and the output size is always passed explicitly.
Everything else (ids, packing, the batch repeat) stays diffusers' code. The calls are counted: if a diffusers release
stopped encoding one reference a call, the request fails loudly instead of pairing latents with the wrong image. The
same hook serves ``Flux2Pipeline``, ``Flux2KleinPipeline`` and ``Flux2KleinKVPipeline`` (same method, same order);
the masked path (``deployments.engine.masking``) keeps its source's latents here too, keyed by the output size it
was resized to. The key is a digest of the pixels (shape and bytes), computed here on the engine thread where the
pixels are used: the key then cannot disagree with the pixels (a request rebuilt in-process, warm-up, the bench) and
costs about 3 ms for a 1024x1024 reference, against the preprocessing and VAE encode a hit saves.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from deployments.caching import MB, ByteLRU, pixel_digest
from deployments.types import CacheStats, ImageRequest

NEGATIVE_PROMPT = ""  # what klein-base's CFG pass is conditioned on (diffusers' Flux2KleinPipeline)
_STAND_IN = Image.new("RGB", (64, 64))  # the smallest reference the pipelines accept (sides >= 64 px)
_ENCODE = "_encode_vae_image"


def tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


class Conditioning:
    """The prompt-embedding and reference-latent caches of one pipeline. Not thread-safe: the engine thread's."""

    def __init__(self, pipeline: Any, prompt_cache_mb: int, latent_cache_mb: int) -> None:
        self.pipeline = pipeline
        self.prompts: ByteLRU[torch.Tensor] = ByteLRU(prompt_cache_mb * MB)
        self.latents: ByteLRU[torch.Tensor] = ByteLRU(latent_cache_mb * MB)
        # klein-base (not distilled) runs CFG on the empty prompt; distilled klein and dev encode no negative prompt.
        takes_negative = "negative_prompt_embeds" in inspect.signature(type(pipeline).__call__).parameters
        self.negative = takes_negative and not getattr(pipeline.config, "is_distilled", True)

    def resize(self, prompt_cache_mb: int, latent_cache_mb: int) -> None:
        self.prompts.resize(prompt_cache_mb * MB)
        self.latents.resize(latent_cache_mb * MB)

    def clear(self) -> None:
        """Give the device memory back (after an out-of-memory error): both caches refill on later requests."""
        self.prompts.clear()
        self.latents.clear()

    @property
    def stats(self) -> dict[str, CacheStats]:
        return {"prompt": self.prompts.stats, "latent": self.latents.stats}

    def prompt_kwargs(self, requests: Sequence[ImageRequest]) -> dict[str, Any]:
        """The pipeline's text arguments for ``requests`` (one, or a batch sharing a call): embeddings instead of
        prompts, each distinct prompt encoded once or taken from the cache. Call it under inference mode."""
        distinct = dict.fromkeys([r.prompt for r in requests] + [NEGATIVE_PROMPT] * self.negative)
        embeds = {prompt: self._embeds(prompt) for prompt in distinct}
        if len(requests) == 1:  # the pipeline repeats the row n times, as it does for prompt=
            rows, kwargs = 1, {"prompt_embeds": embeds[requests[0].prompt], "num_images_per_prompt": requests[0].n}
        else:  # one row per image, as prompt=[...] with each request's prompt n times
            rows = sum(r.n for r in requests)
            prompt_embeds = torch.cat([embeds[r.prompt].expand(r.n, -1, -1) for r in requests])
            kwargs = {"prompt_embeds": prompt_embeds, "num_images_per_prompt": 1}
        if self.negative:
            kwargs["negative_prompt_embeds"] = embeds[NEGATIVE_PROMPT].expand(rows, -1, -1)
        return kwargs

    def _embeds(self, prompt: str) -> torch.Tensor:
        """(1, tokens, dim) on the pipeline's device, as ``encode_prompt`` makes them for ``prompt=prompt``."""
        kept = self.prompts.get(prompt)
        if kept is None:
            kept = self.pipeline.encode_prompt(prompt=prompt, device=self.pipeline._execution_device)[0]
            self.prompts.put(prompt, kept, tensor_bytes(kept))
        return kept

    def reference_keys(self, images: Sequence[np.ndarray]) -> tuple[bytes, ...]:
        """The cache keys of a request's references (pixel digests); none while the latent cache is off."""
        return tuple(pixel_digest(image) for image in images) if self.latents.capacity_bytes else ()

    @contextlib.contextmanager
    def references(self, images: Sequence[np.ndarray], keys: Sequence[bytes]) -> Iterator[list[Image.Image]]:
        """The ``image=`` list for one pipeline call, while its VAE encode of each reference goes through the cache
        (see the module's docstring). Without ``keys`` (the cache off): the images, and no hook."""
        if not keys:
            yield [Image.fromarray(image) for image in images]
            return
        kept = [self.latents.get(key) for key in keys]
        shadowed = vars(self.pipeline).get(_ENCODE)  # another instance-level wrapper (a bench's timer), or None
        encode = self.pipeline._encode_vae_image
        calls = 0

        def cached_encode(image: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
            nonlocal calls
            index, calls = calls, calls + 1
            if index >= len(keys) or image.shape[0] != 1:
                raise RuntimeError("the pipeline no longer encodes one reference per _encode_vae_image call")
            first = keys.index(keys[index])  # the same pixels twice in one request are encoded once
            if kept[first] is None:
                kept[first] = self.keep(keys[first], encode(image=image, generator=generator))
            return kept[first]

        setattr(self.pipeline, _ENCODE, cached_encode)
        try:
            yield [
                Image.fromarray(image) if latents is None else _STAND_IN
                for image, latents in zip(images, kept, strict=True)
            ]
        finally:
            if shadowed is None:
                delattr(self.pipeline, _ENCODE)  # the class's method shows through again
            else:
                setattr(self.pipeline, _ENCODE, shadowed)
        if calls != len(keys):
            raise RuntimeError(f"the pipeline encoded {calls} of {len(keys)} references through {_ENCODE}")

    def source_latents(self, key: tuple, encode: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The latents kept under ``key``, or ``encode()``'s, then kept (a masked edit's source at its output size)."""
        kept = self.latents.get(key)
        return kept if kept is not None else self.keep(key, encode())

    def keep(self, key: Any, latents: torch.Tensor) -> torch.Tensor:
        self.latents.put(key, latents, tensor_bytes(latents))
        return latents
