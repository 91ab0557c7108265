"""fp8 linears for the FLUX.2 transformer: per-row e4m3 weights x dynamic per-row e4m3 activations.

Every large ``nn.Linear`` inside the transformer's double- and single-stream blocks is replaced by
:class:`Fp8Linear`: the weight is quantised once (one scale per output row), the activation is
quantised on the fly (one scale per token), and the product runs on the fp8 tensor cores through
``torch._scaled_mm`` with a bf16 output (and bias). Attention, norms, modulation and the embedders
stay in bf16. Under ``torch.compile`` the activation quantisation fuses into one kernel per linear.

Needs fp8 tensor cores (compute capability 8.9+: Ada, Hopper); :func:`require_fp8_support`
raises a clear error anywhere else, CPUs included.
"""

from __future__ import annotations

import torch
from torch import nn

E4M3 = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(E4M3).max)  # 448
MIN_FEATURES = 1024  # smaller linears gain nothing from fp8


class Fp8Unsupported(RuntimeError):
    """fp8 matmuls were asked for on a device without fp8 tensor cores."""


def fp8_unsupported_reason(device: torch.device | str) -> str | None:
    """Why fp8 cannot run on ``device``, or ``None`` when it can."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"fp8 quantization needs an NVIDIA GPU with fp8 tensor cores (Hopper/Ada); this engine runs on {device}"
    if not torch.cuda.is_available():
        return "fp8 quantization needs CUDA, which is not available"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        name = torch.cuda.get_device_name(device)
        return f"fp8 quantization needs compute capability 8.9+ (Ada/Hopper); {name} is {major}.{minor}"
    return None


def require_fp8_support(device: torch.device | str) -> None:
    reason = fp8_unsupported_reason(device)
    if reason:
        raise Fp8Unsupported(reason)


def cast_e4m3(tensor: torch.Tensor, amax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 tensor, float32 scale) with ``tensor ~= fp8 * scale``: ``amax`` (broadcastable, a bound on
    ``|tensor|`` there) maps to 448. Pointwise given ``amax``, so inductor fuses it into the producer."""
    scale = amax.float().clamp(min=1e-12) / E4M3_MAX
    return (tensor.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def quantize_rowwise(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 tensor, float32 scale per row) with ``tensor ~= fp8 * scale``."""
    return cast_e4m3(tensor, tensor.abs().amax(dim=-1, keepdim=True))


class Fp8Linear(nn.Module):
    """Drop-in for ``nn.Linear`` (inference only): fp8 weights, dynamic fp8 activations, bf16 out."""

    def __init__(self, linear: nn.Linear, out_dtype: torch.dtype | None = None):
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.out_dtype = out_dtype or linear.weight.dtype
        weight, scale = quantize_rowwise(linear.weight.detach())
        self.register_buffer("weight_fp8", weight)  # (out, in)
        self.register_buffer("weight_scale", scale.t().contiguous())  # (1, out)
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().to(self.out_dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        x8, x_scale = quantize_rowwise(x2)
        y = torch._scaled_mm(
            x8,
            self.weight_fp8.t(),
            scale_a=x_scale,
            scale_b=self.weight_scale,
            bias=self.bias,
            out_dtype=self.out_dtype,
        )
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8=e4m3 rowwise"


def _eligible(linear: nn.Linear, min_features: int) -> bool:
    # _scaled_mm wants both matrix dims divisible by 16
    return (
        linear.in_features % 16 == 0
        and linear.out_features % 16 == 0
        and min(linear.in_features, linear.out_features) >= min_features
    )


def swap_linears(module: nn.Module, min_features: int = MIN_FEATURES) -> int:
    """Replace eligible ``nn.Linear`` children of ``module`` (recursively) by :class:`Fp8Linear`."""
    swapped = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear) and _eligible(child, min_features):
            setattr(module, name, Fp8Linear(child))
            swapped += 1
        else:
            swapped += swap_linears(child, min_features)
    return swapped


def quantize_transformer_fp8(transformer: nn.Module, min_features: int = MIN_FEATURES) -> int:
    """Swap the linears of the FLUX.2 transformer's repeated blocks to fp8; returns how many."""
    device = next(transformer.parameters()).device
    require_fp8_support(device)
    swapped = 0
    for block in [*transformer.transformer_blocks, *transformer.single_transformer_blocks]:
        swapped += swap_linears(block, min_features)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the bf16 weights just released
    return swapped
