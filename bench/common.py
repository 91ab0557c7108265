"""What the suites share: timing on the device, FLOPs and floors, per-step and per-stage hooks, GPU
utilisation, requests, and a JSON file written as figures arrive."""

from __future__ import annotations

import functools
import gc
import io
import json
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from deployments.types import ImageRequest


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def cuda_ok() -> bool:
    return torch.cuda.is_available()


def sync() -> None:
    if cuda_ok():
        torch.cuda.synchronize()


def free_cuda() -> None:
    """Drop what the last measurement left, so the next one starts from the same memory."""
    gc.collect()
    if cuda_ok():
        torch.cuda.empty_cache()


def pct(values: list[float], q: float) -> float:
    """Percentile with linear interpolation (numpy's default)."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(pct(values, 50), 4),
        "p95": round(pct(values, 95), 4),
        "mean": round(statistics.fmean(values), 4) if values else float("nan"),
        "min": round(min(values), 4) if values else float("nan"),
        "max": round(max(values), 4) if values else float("nan"),
    }


class Results:
    """A dict written to ``path`` whenever a figure is set, so a killed run keeps what it measured."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.data: dict[str, Any] = {"started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.flush()
        print(f"[result] {key}: {json.dumps(value, default=str)[:1500]}", flush=True)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def flush(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1, default=str))


class Deadline:
    """The command's wall-clock budget: sections that would not fit are skipped, and say so."""

    def __init__(self, seconds: float):
        self.start = time.monotonic()
        self.seconds = seconds

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def allows(self, needed_s: float) -> bool:
        return self.left() > needed_s


def matmul_ceiling(n: int = 8192, reps: int = 10, sustained: int = 300) -> dict[str, float]:
    """bf16 n^3 matmul rate on random data: ``tflops`` is the burst rate (3 warm-ups, mean of ``reps``
    timed products, ~14 ms); ``sustained_tflops`` the median of the last half of ``sustained`` products
    back to back (~0.5 s), which is what a transformer step of hundreds of ms gets: under continuous
    matmuls the H200's SM clock settles near 1500 MHz (docs/benchmarks.md)."""
    if not cuda_ok():
        return {"skipped": "no GPU"}
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    sync()
    ms = start.elapsed_time(end) / reps
    result = {"n": n, "ms": round(ms, 3), "tflops": round(2 * n**3 / (ms / 1e3) / 1e12, 1)}
    sustained_ms = statistics.median(timed_calls(functools.partial(torch.mm, a, b), sustained)[sustained // 2 :])
    result["sustained_tflops"] = round(2 * n**3 / (sustained_ms / 1e3) / 1e12, 1)
    # the fp8 rate too (rowwise-scaled _scaled_mm, as the fp8 linears use it)
    try:
        a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn).t().contiguous().t()
        sa = torch.ones(n, 1, device="cuda")
        sb = torch.ones(1, n, device="cuda")
        for _ in range(3):
            torch._scaled_mm(a8, b8, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)
        sync()
        start.record()
        for _ in range(reps):
            torch._scaled_mm(a8, b8, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)
        end.record()
        sync()
        ms8 = start.elapsed_time(end) / reps
        result["fp8_rowwise_tflops"] = round(2 * n**3 / (ms8 / 1e3) / 1e12, 1)
    except Exception as exc:
        result["fp8_error"] = repr(exc)[:300]
    del a, b
    torch.cuda.empty_cache()
    return result


def floors_ms(flops: float, ceiling: dict[str, Any]) -> dict[str, float]:
    """A step's floor at each measured matmul rate of :func:`matmul_ceiling`: ``floor_ms`` (burst) and
    ``sustained_floor_ms``; a rate that was not measured gives no floor."""
    rates = {"floor_ms": ceiling.get("tflops"), "sustained_floor_ms": ceiling.get("sustained_tflops")}
    return {key: round(flops / (rate * 1e12) * 1e3, 2) for key, rate in rates.items() if rate}


def mark() -> Any:
    """A point in time on the device's stream: a recorded CUDA event, or the host clock on a CPU."""
    if cuda_ok():
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event
    return time.perf_counter()


def elapsed_ms(start: Any, end: Any) -> float:
    """Milliseconds between two :func:`mark` s (synchronize first on a GPU)."""
    return start.elapsed_time(end) if cuda_ok() else (end - start) * 1e3


def timed_calls(call: Callable[[], Any], n: int) -> list[float]:
    """Milliseconds of each of ``n`` calls run back to back: marks around each, one sync at the end, so the
    host queues the next call while the device runs this one."""
    spans = []
    for _ in range(n):
        start = mark()
        call()
        spans.append((start, mark()))
    sync()
    return [elapsed_ms(start, end) for start, end in spans]


class StepTimer:
    """CUDA-event timing of every transformer forward inside real pipeline calls (hooks, no re-compile)."""

    def __init__(self, transformer: torch.nn.Module):
        self.transformer = transformer
        self.pending: list[tuple[Any, Any]] = []
        self.capture_next = False
        self.captured: dict[str, Any] | None = None
        self._handles = [
            transformer.register_forward_pre_hook(self._pre, with_kwargs=True),
            transformer.register_forward_hook(self._post, with_kwargs=True),
        ]

    def _pre(self, module, args, kwargs):
        if self.capture_next:  # a copy of one step's inputs, for numerical comparisons
            self.captured = {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        self.pending.append((mark(), None))

    def _post(self, module, args, kwargs, output):
        start, _ = self.pending[-1]
        self.pending[-1] = (start, mark())
        if self.capture_next:
            self.capture_next = False
            out = output[0] if isinstance(output, tuple) else output.sample
            self.captured_out = out.detach().float().clone()

    def take_ms(self) -> list[float]:
        sync()
        times = [elapsed_ms(start, end) for start, end in self.pending if end is not None]
        self.pending = []
        return times

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class StageTimer:
    """Time per pipeline stage inside real requests (CUDA events; host clock on CPU).

    Stages: the text encoder (``encode_prompt``), the VAE encoder (reference images), the VAE decoder,
    each wrapped as a method on the instance (outside any compiled region), and every transformer
    call through a :class:`StepTimer`. ``take_ms`` sums each stage since the last call.
    """

    STAGES = (("text_encoder", None, "encode_prompt"), ("vae_encode", "vae", "encode"), ("vae_decode", "vae", "decode"))

    def __init__(self, pipeline):
        self.steps = StepTimer(pipeline.transformer)
        self.step_ms: list[float] = []
        self.pending: dict[str, list[tuple[Any, Any]]] = {name: [] for name, _, _ in self.STAGES}
        self._wrapped = []
        for name, part, method in self.STAGES:
            owner = getattr(pipeline, part) if part else pipeline
            setattr(owner, method, self._wrap(name, getattr(owner, method)))
            self._wrapped.append((owner, method))

    def _wrap(self, name: str, original):
        def timed(*args, **kwargs):
            start = mark()
            result = original(*args, **kwargs)
            self.pending[name].append((start, mark()))
            return result

        return timed

    def take_ms(self) -> dict[str, float]:
        """Each stage's milliseconds since the last call; ``step_ms`` keeps the transformer's calls one by one."""
        sync()
        self.step_ms = self.steps.take_ms()
        totals = {"transformer": sum(self.step_ms)}
        for name, spans in self.pending.items():
            totals[name] = sum(elapsed_ms(start, end) for start, end in spans)
            spans.clear()
        return totals

    def remove(self) -> None:
        self.steps.remove()
        for owner, method in self._wrapped:
            delattr(owner, method)  # the class's method shows through again


class GpuUtilSampler:
    """NVML GPU utilisation (percent of the time a kernel ran), read every ``period_s`` on a background
    thread while entered."""

    def __init__(self, period_s: float = 0.05):
        self.period_s = period_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def __enter__(self) -> GpuUtilSampler:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception as exc:
            self.error = repr(exc)[:200]
            return self

        def loop() -> None:
            while not self._stop.is_set():
                self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                time.sleep(self.period_s)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def result(self) -> dict[str, Any]:
        if not self.samples:
            return {"error": self.error or "no samples"}
        mean = statistics.fmean(self.samples)
        return {
            "samples": len(self.samples),
            "mean_util_pct": round(mean, 1),
            "idle_fraction": round(1 - mean / 100, 3),
        }


def family_of_source(source: str) -> str:
    """The model family of a bench source (a hub id, a random-weight or a tiny one): FLUX.2-dev or klein."""
    return "dev" if source.endswith("dev") else "klein"


def reference_images(count: int, width: int, height: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
        out.append(np.repeat(np.repeat(small, 16, axis=0), 16, axis=1))
    return tuple(out)


def make_request(width: int, height: int, refs: int, steps: int, seed: int = 0) -> ImageRequest:
    return ImageRequest(
        prompt="a photo of a red car in front of a house at sunset",
        width=width,
        height=height,
        images=reference_images(refs, width, height, seed),
        seed=seed,
        num_inference_steps=steps,
    )


def step_inputs(
    config: dict,
    width: int,
    height: int,
    refs: int,
    *,
    text_tokens: int = 512,
    device: str = "meta",
    dtype: torch.dtype = torch.bfloat16,
) -> dict[str, Any]:
    """One transformer forward's keyword arguments at this shape, as the pipelines build them (random
    values; on ``meta`` nothing is allocated). ``config`` is the transformer's config."""
    side_h, side_w = height // 16, width // 16
    ids = []
    for r in range(1 + refs):
        hh, ww = torch.meshgrid(torch.arange(side_h), torch.arange(side_w), indexing="ij")
        ids.append(torch.stack([torch.full_like(hh, 10 * r), hh, ww, torch.zeros_like(hh)], -1).reshape(-1, 4))
    img_ids = torch.cat(ids).unsqueeze(0)
    txt_ids = torch.zeros(1, text_tokens, 4, dtype=torch.long)
    txt_ids[..., 3] = torch.arange(text_tokens)
    with torch.device(device):
        return dict(
            hidden_states=torch.randn(1, img_ids.shape[1], config["in_channels"], dtype=dtype),
            encoder_hidden_states=torch.randn(1, text_tokens, config["joint_attention_dim"], dtype=dtype),
            timestep=torch.full((1,), 0.5, dtype=dtype),
            guidance=torch.full((1,), 4.0, dtype=dtype) if config["guidance_embeds"] else None,
            img_ids=img_ids.to(device),
            txt_ids=txt_ids.to(device),
            return_dict=False,
        )


def count_step_flops(model: torch.nn.Module, inputs: dict[str, Any]) -> dict[str, float]:
    """FLOPs of one forward (on ``meta`` nothing runs): ``matmul`` (every ``nn.Linear``, on its own
    tokens), ``attention`` (the rest: FLUX.2's transformer has no other matmuls) and their ``total``.

    Attention is counted through SDPA's math decomposition, which ``FlopCounterMode`` knows on every
    device; linears are counted from their shapes, since some dispatch as ``bmm`` like attention does.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    linear = 0

    def count_linear(module: torch.nn.Linear, args: tuple, output: torch.Tensor) -> None:
        nonlocal linear
        linear += 2 * args[0].numel() * module.out_features

    handles = [m.register_forward_hook(count_linear) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    total = float(counter.get_total_flops())
    return {"matmul": float(linear), "attention": total - linear, "total": total}


def transformer_step_flops(source: str, width: int, height: int, refs: int, text_tokens: int = 512) -> float:
    """FLOPs of one full-size transformer forward at this shape, counted on ``meta``."""
    from deployments.engine.synthetic.random_weights import build_transformer, transformer_config

    model = build_transformer(source, device="meta", dtype=torch.bfloat16)
    inputs = step_inputs(transformer_config(source), width, height, refs, text_tokens=text_tokens)
    return count_step_flops(model, inputs)["total"]


def compare(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    out, ref = out.float().flatten(), ref.float().flatten()
    return {
        "rel_l2": round(((out - ref).norm() / ref.norm()).item(), 5),
        "cosine": round(torch.nn.functional.cosine_similarity(out, ref, dim=0).item(), 6),
        "finite": bool(torch.isfinite(out).all().item()),
    }


def decode_rgb(data: bytes) -> np.ndarray:
    """An encoded image file -> (H, W, 3) uint8."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def gib(nbytes: float) -> float:
    return round(nbytes / 2**30, 2)
