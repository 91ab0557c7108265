"""The compiled VAE decoder: static graphs for the warmed sizes, one dynamic graph for every other size.

A graph compiled for one size runs klein-4B's 1024² decode in 37 ms on an H200, a dynamic one in 47 ms; but a
decoder that knows only static graphs recompiles on the first request of a new size (89 s for dev). One
``torch.compile`` cannot hold both: dynamo tries its newest cache entry first, so a general graph built after the
static ones shadows them (measured: 46.6 ms at the warmed size). :class:`DecoderGraphs` compiles two *different*
functions instead, each with its own cache, and picks one by the latents' size in Python, before dynamo sees it.

Batch size: the static graphs are compiled with the batch dimension marked dynamic past 1, so n = 1 and n >= 2 are
two graphs a size, and n = 3, 4 compile nothing; warm-up builds both (its batched run, then
:func:`warm_general_decode` for the general graph).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
import torch.fx.experimental._config
from torch import nn

logger = logging.getLogger(__name__)


class DecoderGraphs:
    """The decoder's ``forward``: latents of a ``static_sizes`` size (latent height, width) run a graph of
    their own size; any other size runs one dynamic graph."""

    def __init__(self, decoder: nn.Module, static_sizes: Iterable[tuple[int, int]], compile_kwargs: dict[str, Any]):
        forward = decoder.forward
        self.static_sizes = frozenset(static_sizes)

        def general(z: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            return forward(z, *args, **kwargs)  # its own code object: a cache apart from ``forward``'s

        self._static = torch.compile(forward, dynamic=False, **compile_kwargs)
        self._general = torch.compile(general, dynamic=True, **compile_kwargs)
        # Two graphs a warmed size (n = 1, n >= 2) in the one cache of ``forward``'s code.
        limit = 2 * len(self.static_sizes) + 2
        if torch._dynamo.config.recompile_limit < limit:
            torch._dynamo.config.recompile_limit = limit

    def __call__(self, z: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if tuple(z.shape[-2:]) in self.static_sizes:
            if z.shape[0] > 1:
                torch._dynamo.maybe_mark_dynamic(z, 0)
            return self._static(z, *args, **kwargs)
        return self._general(z, *args, **kwargs)

    def general_size(self) -> tuple[int, int]:
        """A latent size off every static one, to build the general graph at warm-up."""
        height, width = max(self.static_sizes, default=(128, 128))
        return height + 2, width


def compile_decoder(vae: nn.Module, output_sizes: Iterable[tuple[int, int]], compile_kwargs: dict[str, Any]) -> None:
    """Compile ``vae.decoder``: a static graph for each of ``output_sizes`` (pixels, width x height), one dynamic
    graph for the rest."""
    # Dynamic graphs without "duck sizing", which assumes height == width after a square size. The switch is
    # global; it only makes graphs more general.
    torch.fx.experimental._config.use_duck_shape = False
    scale = 2 ** (len(vae.config.block_out_channels) - 1)  # pixels per latent pixel (FLUX.2: 8)
    static = {(height // scale, width // scale) for width, height in output_sizes}
    vae.decoder.forward = DecoderGraphs(vae.decoder, static, compile_kwargs)


def warm_general_decode(vae: nn.Module) -> None:
    """Build the general graph (n = 1 and n >= 2) so that no request of an unwarmed size compiles the decoder;
    a no-op for a decoder that is not compiled."""
    graphs = vae.decoder.forward
    if not isinstance(graphs, DecoderGraphs):
        return
    parameter = next(vae.decoder.parameters())
    height, width = graphs.general_size()
    channels = vae.config.latent_channels
    with torch.inference_mode():
        for batch in (1, 2):
            graphs(torch.zeros(batch, channels, height, width, device=parameter.device, dtype=parameter.dtype))
