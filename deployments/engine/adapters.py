"""LoRA adapters per request: each named adapter is read once, and switching between them never recompiles.

Before the transformer is quantised or compiled, :class:`AdapterManager` gives every linear layer of it
``max_per_request`` PEFT LoRA *slots*: padded to ``max_rank``, zero until used, and scaled by one shared
0-dim tensor per slot. A request's AdapterStack (canonical: sorted by name; entry i in slot i) is applied by
copying the adapters' weights into their slots and filling the scale tensors in place; unused slots hold
zeros. A request without adapters runs with the slots disabled: the base model's own graph, so its output
is the base output byte for byte, at the base speed. The compiled blocks thus have two variants, slots on
and off; warm-up builds both (:meth:`AdapterManager.warming`), and no switch compiles anything after that.

diffusers' ``enable_lora_hotswap`` + ``load_lora_weights(hotswap=True)`` + ``set_adapters`` is not used to
switch: ``set_adapters`` replaces the active-adapter list and writes Python floats into ``scaling``, both
guarded by the compiled graphs, so every new stack or scale recompiles (two graphs each on the tiny model).

Adapters are read by diffusers' own loader (``lora_state_dict``: diffusers/PEFT keys, and the kohya
``lora_unet_*`` and BFL/ai-toolkit ``diffusion_model.*`` names it converts) from safetensors only, so a
pickle checkpoint is never unpickled. Each is checked against the slots (keys, shapes, rank, finite
values) before any slot changes, and kept on the device, up to ``max_loaded`` of them, least recently
used evicted.

fp8: the slots wrap each ``nn.Linear``; ``quantize_transformer_fp8`` run afterwards swaps only the
wrapped base layer, so the LoRA branch runs in the model's dtype beside the fp8 matmul. Compiled on an
H200, slots off gave the plain bf16 model's bytes; with fp8 they gave reproducible bytes that differ
from a plain fp8 model's (rel-L2 0.004, under fp8's own 0.006 from bf16).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline
from peft import LoraConfig
from peft.tuners.lora import LoraLayer
from peft.utils.other import get_pattern_key
from torch import nn

from deployments.config import AdapterSettings, AdapterSpec
from deployments.errors import InvalidRequest, NotFound
from deployments.types import ADAPTERS_PARAM, AdapterStack, AdapterStats

logger = logging.getLogger(__name__)

LOCAL_SOURCE = re.compile(r"^[/.~]|\.safetensors$")  # what no hub repo id looks like
SLOT_PREFIX = "flux2_slot"
_PREFIX = "transformer."  # diffusers' key prefix for the FLUX.2 transformer


Weights = dict[str, tuple[torch.Tensor, torch.Tensor]]  # module -> (A (r, in), B (out, r) with alpha / r folded in)


class AdapterManager:
    """The adapter slots of one pipeline's transformer and the adapters resident on its device.

    Create it after loading and before ``apply_optimizations`` (fp8, compile); with no adapters configured it
    installs nothing and refuses every name. Not thread-safe: call it on the thread that runs the pipeline,
    right before each call.
    """

    def __init__(self, pipeline: DiffusionPipeline, settings: AdapterSettings) -> None:
        transformer = pipeline.transformer
        weight = next(transformer.parameters())
        self.settings = settings
        self.stats = AdapterStats()
        self._pipeline = pipeline
        self._specs = {spec.name: spec for spec in settings.adapters}
        self._device, self._dtype = weight.device, weight.dtype
        self._slots = [f"{SLOT_PREFIX}{i}" for i in range(settings.max_per_request if settings.adapters else 0)]
        self._scales = [torch.zeros((), device=self._device) for _ in self._slots]
        self._layers = _install_slots(transformer, self._slots, self._scales, settings.max_rank)
        self._resident: OrderedDict[str, Weights] = OrderedDict()
        self._slot_names: list[str | None] = [None] * len(self._slots)
        self._slot_scales = [0.0] * len(self._slots)
        self._enabled = True  # as PEFT leaves them; the first activate sets it
        self._warming = False

    @property
    def resident(self) -> tuple[str, ...]:
        """Adapters in device memory, least recently used first."""
        return tuple(self._resident)

    def activate(self, adapters: AdapterStack) -> float:
        """Make ``adapters`` the adapters of the next pipeline call and return the seconds this took.

        Adapters not resident are loaded first; one that cannot be raises NotFound / InvalidRequest with the
        slots as they were. An empty AdapterStack disables the slots: the base model's graph and output, byte for byte.
        """
        start = time.perf_counter()
        self._check_current(adapters)
        keep = {name for name, _ in adapters.entries}
        weights = [self._resident_weights(name, keep) for name, _ in adapters.entries]
        swap_start = time.perf_counter()
        enabled = bool(adapters) or self._warming
        with torch.no_grad():
            for index, slot in enumerate(self._slots if enabled else ()):
                name, scale = adapters.entries[index] if index < len(adapters) else (None, 0.0)
                if self._slot_names[index] != name:
                    self._write_slot(slot, weights[index] if name else {})
                    self._slot_names[index] = name
                if self._slot_scales[index] != scale:
                    self._scales[index].fill_(scale)
                    self._slot_scales[index] = scale
        if enabled != self._enabled:
            self._enable(enabled)
        self.stats.swap_s += time.perf_counter() - swap_start
        return time.perf_counter() - start

    def _check_current(self, adapters: AdapterStack) -> None:
        """The serving layer resolved ``adapters`` against the settings this model last described; a reconfigure since
        may have removed one of its adapters or lowered ``max_scale``: such adapters are refused, never run."""
        for name, scale in adapters.entries:
            if name not in self._specs:
                served = ", ".join(sorted(self._specs)) or "none"
                raise NotFound(
                    f"LoRA adapter {name!r} is not served by this model now; it serves: {served}",
                    param=ADAPTERS_PARAM,
                    code="adapter_not_found",
                )
            if abs(scale) > self.settings.max_scale:
                raise InvalidRequest(
                    f"scale {scale} of LoRA adapter {name!r} is over this model's max_scale {self.settings.max_scale}",
                    param=ADAPTERS_PARAM,
                    code="invalid_adapter_scale",
                )

    def reconfigure(self, settings: AdapterSettings) -> None:
        """Serve the adapters and bounds of ``settings`` from now on, on the slots already installed and compiled.

        A resident adapter that is gone or whose spec changed is dropped (its slot emptied), as are the least
        recently used beyond ``max_loaded``. The slots' count and rank are part of the compiled graphs: settings
        that need other slots, or slots where none were installed, raise ValueError (they need a new replica).
        """
        installed = (len(self._slots), self.settings.max_rank)
        if settings.adapters and installed != (settings.max_per_request, settings.max_rank):
            have = f"{installed[0]} slot(s) of rank {installed[1]}" if self._slots else "no adapter slots"
            raise ValueError(
                f"lora needs {settings.max_per_request} slot(s) of rank {settings.max_rank}; the replica has {have}, "
                "installed when it loaded: set adapters on a model without them, max_per_request or max_rank in "
                "args, which starts new replicas"
            )
        specs = {spec.name: spec for spec in settings.adapters}
        kept = [name for name in self._resident if specs.get(name) == self._specs[name]]
        stale = [name for name in self._resident if name not in kept] + kept[: max(0, len(kept) - settings.max_loaded)]
        with torch.no_grad():
            for name in stale:
                self._evict(name)
        self.settings, self._specs = settings, specs

    def _evict(self, name: str) -> None:
        """Drop a resident adapter; a slot still holding it is emptied, so no later request can run it."""
        del self._resident[name]
        self.stats.evictions += 1
        for index, slot in enumerate(self._slots):
            if self._slot_names[index] == name:
                self._write_slot(slot, {})
                self._slot_names[index] = None

    @contextlib.contextmanager
    def warming(self) -> Iterator[None]:
        """Within, a request without adapters runs on the slots' graphs, with empty slots (the base output):
        warm-up runs each shape once inside so adapter requests find their graphs compiled."""
        self._warming = True
        try:
            yield
        finally:
            self._warming = False

    def _resident_weights(self, name: str, keep: set[str]) -> Weights:
        weights = self._resident.get(name)
        if weights is not None:
            self._resident.move_to_end(name)
            self.stats.hits += 1
            return weights
        weights = self._load(self._specs[name])
        while len(self._resident) >= self.settings.max_loaded:
            victim = next(resident for resident in self._resident if resident not in keep)
            del self._resident[victim]
            self.stats.evictions += 1
        self._resident[name] = weights
        self.stats.loads += 1
        return weights

    def _load(self, spec: AdapterSpec) -> Weights:
        start = time.perf_counter()
        try:
            state_dict, metadata = self._read(spec)
            weights = self._checked(spec.name, state_dict, _transformer_metadata(metadata))
        except (InvalidRequest, NotFound):
            self.stats.load_failures += 1
            raise
        seconds = time.perf_counter() - start
        self.stats.load_s += seconds
        logger.info("LoRA adapter %r read from %s in %.2fs (%d layers)", spec.name, spec.source, seconds, len(weights))
        return weights

    def _read(self, spec: AdapterSpec) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
        local = Path(spec.source).expanduser()
        try:
            if LOCAL_SOURCE.search(spec.source) and not local.exists():  # not a hub id: never ask the hub
                raise FileNotFoundError(local)
            return self._pipeline.lora_state_dict(
                str(local) if local.exists() else spec.source,
                weight_name=spec.weight_name,
                revision=spec.revision,
                use_safetensors=True,  # never falls back to unpickling a .bin
                return_lora_metadata=True,
            )
        except OSError as exc:  # no such file or folder, no .safetensors in it, hub repo or file not found
            logger.error("LoRA adapter %r: cannot read %s: %s", spec.name, spec.source, exc)
            raise NotFound(
                f"LoRA adapter {spec.name!r} is configured but its safetensors weights cannot be read",
                param=ADAPTERS_PARAM,
                code="adapter_source_not_found",
            ) from exc
        except Exception as exc:  # whatever a malformed file makes safetensors or a format converter raise
            raise _invalid(spec.name, f"not a readable LoRA safetensors file ({type(exc).__name__}: {exc})") from exc

    def _checked(self, name: str, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Weights:
        """The adapter's weights on the device, or InvalidRequest for anything the slots cannot hold exactly."""
        if not any(key.startswith(_PREFIX) for key in state_dict):  # bare module paths, as some trainers export
            state_dict = {_PREFIX + key: tensor for key, tensor in state_dict.items()}
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in state_dict.items():
            module, _, part = key.removeprefix(_PREFIX).rpartition(".lora_")
            if not key.startswith(_PREFIX) or module not in self._layers or part not in ("A.weight", "B.weight"):
                raise _invalid(
                    name,
                    f"key {key!r} is not a LoRA A/B weight of a linear layer of this transformer (DoRA, LoKr, "
                    "LoRA biases and text-encoder LoRAs are not supported)",
                )
            pairs.setdefault(module, {})[part[0]] = tensor
        if not pairs:
            raise _invalid(name, "it holds no LoRA weights")
        weights: Weights = {}
        for module, pair in pairs.items():
            if len(pair) != 2:
                raise _invalid(name, f"{module} has lora_{next(iter(pair))} without its pair")
            down, up = pair["A"], pair["B"]
            layer = self._layers[module]
            rank = down.shape[0] if down.ndim == 2 else 0
            if down.shape != (rank, layer.in_features) or up.shape != (layer.out_features, rank) or rank == 0:
                raise _invalid(
                    name,
                    f"{module}: shapes {tuple(down.shape)} and {tuple(up.shape)} do not fit a linear layer of "
                    f"{layer.in_features} -> {layer.out_features} features",
                )
            if rank > self.settings.max_rank:
                raise _invalid(name, f"{module} has rank {rank}, over this model's max_rank {self.settings.max_rank}")
            if not (down.is_floating_point() and up.is_floating_point()):
                raise _invalid(name, f"{module}: weights are not floating point")
            if not (torch.isfinite(down).all() and torch.isfinite(up).all()):
                raise _invalid(name, f"{module}: weights are not finite")
            up = up.float() * _peft_scale(name, metadata, module, rank)
            weights[module] = (down.to(self._device, self._dtype), up.to(self._device, self._dtype))
        return weights

    def _enable(self, enabled: bool) -> None:
        for layer in self._layers.values():
            layer.enable_adapters(enabled)
        self._enabled = enabled

    def _write_slot(self, slot: str, weights: Weights) -> None:
        torch._foreach_zero_([weight for layer in self._layers.values() for weight in _slot_weights(layer, slot)])
        if weights:
            targets, sources = [], []
            for module, (down, up) in weights.items():
                slot_down, slot_up = _slot_weights(self._layers[module], slot)
                rank = down.shape[0]
                targets += [slot_down[:rank], slot_up[:, :rank]]
                sources += [down, up]
            torch._foreach_copy_(targets, sources)


def _install_slots(
    transformer: nn.Module, slots: list[str], scales: list[torch.Tensor], rank: int
) -> dict[str, LoraLayer]:
    """Zero LoRA slots of ``rank`` on every linear layer, all active, slot i scaled by ``scales[i]``."""
    if not slots:
        return {}
    linears = sorted(name for name, module in transformer.named_modules() if isinstance(module, nn.Linear))
    pattern = "^(" + "|".join(map(re.escape, linears)) + ")$"  # PEFT full-matches a string
    with warnings.catch_warnings():  # PEFT warns on every adapter after the first: several are the point
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        for slot in slots:
            transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=pattern), adapter_name=slot)
    transformer.set_adapters(slots)
    layers = {name: module for name, module in transformer.named_modules() if isinstance(module, LoraLayer)}
    with torch.no_grad():
        for layer in layers.values():
            for slot, scale in zip(slots, scales, strict=True):
                layer.scaling[slot] = scale  # a tensor filled in place, where PEFT keeps a float: no recompiles
                for weight in _slot_weights(layer, slot):
                    weight.zero_()
    logger.info("LoRA: %d slot(s) of rank %d on %d linear layers", len(slots), rank, len(layers))
    return layers


def _slot_weights(layer: LoraLayer, slot: str) -> tuple[torch.Tensor, torch.Tensor]:
    return layer.lora_A[slot].weight, layer.lora_B[slot].weight


def _transformer_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """The LoraConfig fields diffusers saved for the transformer (``transformer.r``, ...), unprefixed."""
    return {key.removeprefix(_PREFIX): value for key, value in (metadata or {}).items() if key.startswith(_PREFIX)}


def _peft_scale(name: str, metadata: dict[str, Any], module: str, rank: int) -> float:
    """PEFT's alpha / r for ``module`` (alpha / sqrt(r) with rsLoRA). 1 without metadata: diffusers' convention
    for files without alphas (its kohya converter folds kohya's alphas into the weights)."""
    if not metadata:
        return 1.0
    try:
        if metadata.get("use_dora") or metadata.get("lora_bias"):
            raise _invalid(name, "DoRA and LoRA biases are not supported")
        ranks, alphas = metadata.get("rank_pattern") or {}, metadata.get("alpha_pattern") or {}
        configured = int(ranks.get(get_pattern_key(ranks, module), metadata["r"]))
        alpha = float(alphas.get(get_pattern_key(alphas, module), metadata["lora_alpha"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _invalid(name, f"its LoRA metadata is malformed ({type(exc).__name__}: {exc})") from exc
    if configured != rank:
        raise _invalid(name, f"{module}: metadata gives rank {configured}, the weights have rank {rank}")
    return alpha / math.sqrt(rank) if metadata.get("use_rslora") else alpha / rank


def _invalid(name: str, reason: str) -> InvalidRequest:
    return InvalidRequest(
        f"LoRA adapter {name!r} cannot be used: {reason}", param=ADAPTERS_PARAM, code="invalid_adapter"
    )
