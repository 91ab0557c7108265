"""Engine speed options on CPU: regional compile, compile cache folder, fused QKV, fp8 refusal and math."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from deployments.config import ModelConfig, Shape
from deployments.engine import Flux2Engine, ModelLoadError, warm_up
from deployments.engine.fp8 import Fp8Linear, Fp8Unsupported, quantize_rowwise, require_fp8_support, swap_linears
from deployments.engine.optimize import configure_compile_cache, resolve_compile
from deployments.engine.vae import DecoderGraphs
from deployments.types import ImageRequest

pytestmark = pytest.mark.background  # inductor compiles: minutes of CPU, no time checked

# Every compiled engine here declares the one warm size of the requests: the tiny models share their VAE, so its
# decoder graphs for that size are compiled once and then come out of the run's cache.
WARM = (Shape(width=64, height=64),)


def _request(refs: int = 0) -> ImageRequest:
    rng = np.random.default_rng(0)
    images = tuple(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(refs))
    return ImageRequest(prompt="a red car", width=64, height=64, images=images, seed=3, num_inference_steps=2)


def test_regional_compile_matches_eager(compile_cache: Path) -> None:
    torch._dynamo.reset()
    eager = Flux2Engine.from_config(ModelConfig(source="tiny-dev", compile="none"))
    cache = compile_cache
    written_before = set(cache.rglob("*"))
    config = ModelConfig(source="tiny-dev", compile="regional", compile_cache_dir=str(cache), warmup_shapes=WARM)
    compiled = Flux2Engine.from_config(config)
    assert compiled.compile == "regional"
    assert isinstance(compiled.pipeline.vae.decoder.forward, DecoderGraphs), "the VAE follows the transformer"
    try:
        # one shape: a second one would recompile the blocks with dynamic shapes (twice the CPU time)
        want = eager.generate(_request(1)).images[0].astype(np.int16)
        got = compiled.generate(_request(1)).images[0].astype(np.int16)
        assert np.abs(want - got).max() <= 2, "compiled output differs from eager"
        assert set(cache.rglob("*")) - written_before, "inductor wrote nothing into the configured cache"
    finally:
        torch._dynamo.reset()


def test_after_warm_up_no_batch_size_compiles(compile_cache: Path) -> None:
    """Warmed at one image a request, the first request for n > 1 compiled the blocks and the VAE again (three
    graphs here, 90 s on an H200): warm-up's batched run leaves no n to compile."""
    torch._dynamo.reset()
    config = ModelConfig(
        source="tiny-klein",
        compile="regional",
        compile_cache_dir=str(compile_cache),
        warmup_shapes=WARM,
    )
    engine = Flux2Engine.from_config(config)
    try:
        times = warm_up(engine)
        assert {"64x64+0ref:first", "64x64+0ref:second", "64x64+0ref:batch"} <= set(times)
        assert times["compile:entire_frame_compile"] >= times["compile:inductor_compile"] > 0
        warmed = counters["stats"]["unique_graphs"]
        for n in (1, 3, 4, 2):
            engine.generate(dataclasses.replace(_request(), n=n))
        assert counters["stats"]["unique_graphs"] == warmed, "a batch size compiled after warm-up"
    finally:
        torch._dynamo.reset()


def test_compiled_vae_and_text_encoder_match_eager(compile_cache: Path) -> None:
    source = "tiny-klein"  # Qwen3 text encoder; the regional test above covers dev's Mistral
    torch._dynamo.reset()
    eager = Flux2Engine.from_config(ModelConfig(source=source, compile="none"))
    config = ModelConfig(
        source=source,
        compile="none",
        compile_vae=True,
        compile_text_encoder=True,
        compile_cache_dir=str(compile_cache),
        warmup_shapes=WARM,
    )
    compiled = Flux2Engine.from_config(config)
    encoder = compiled.pipeline.text_encoder
    compiled_layers = [m for m in encoder.modules() if getattr(m, "_compiled_call_impl", None) is not None]
    assert compiled_layers and all(type(m).__name__.endswith("Layer") for m in compiled_layers)
    assert isinstance(compiled.pipeline.vae.decoder.forward, DecoderGraphs)
    try:
        want = eager.generate(_request(1)).images[0].astype(np.int16)
        got = compiled.generate(_request(1)).images[0].astype(np.int16)
        assert np.abs(want - got).max() <= 2, "compiled VAE / text encoder changed the output"
    finally:
        torch._dynamo.reset()


def test_warmed_sizes_decode_through_static_graphs(compile_cache: Path) -> None:
    """A warmed size decodes through its own static graph (n = 1 and n >= 2), any other size through the one
    dynamic graph warm-up built: after warm-up no size and no n compiles the decoder, and each path gives the
    eager decoder's pixels. The warmed size is the batch test's, whose decoder graphs the run's cache holds."""
    torch._dynamo.reset()
    config = ModelConfig(
        source="tiny-klein",
        compile="none",
        compile_vae=True,
        compile_text_encoder=False,
        compile_cache_dir=str(compile_cache),
        warmup_shapes=WARM,
    )
    engine = Flux2Engine.from_config(config)
    eager = Flux2Engine.from_config(ModelConfig(source="tiny-klein"))
    graphs = engine.pipeline.vae.decoder.forward
    assert isinstance(graphs, DecoderGraphs) and graphs.static_sizes == {(8, 8)}
    try:
        warm_up(engine)
        warmed = counters["stats"]["unique_graphs"]
        static_entries = torch._dynamo.eval_frame._debug_get_cache_entry_list(type(engine.pipeline.vae.decoder).forward)
        assert len(static_entries) == 2, "one static graph for n = 1 and one for n >= 2"
        for width, height, n in ((64, 64, 3), (80, 64, 1), (64, 80, 2), (64, 64, 1)):
            request = ImageRequest(prompt="a red car", width=width, height=height, n=n, seed=3, num_inference_steps=1)
            got, want = engine.generate(request).images, eager.generate(request).images
            assert all(np.abs(a.astype(np.int16) - b).max() <= 2 for a, b in zip(got, want, strict=True))
        assert counters["stats"]["unique_graphs"] == warmed, "a size or an n compiled the decoder after warm-up"
    finally:
        torch._dynamo.reset()


def test_compile_cache_dir_is_created_and_exported(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    target = tmp_path / "a" / "b"
    path = configure_compile_cache(str(target))
    assert path == target and target.is_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(target)
    import torch._inductor.config as inductor_config

    assert inductor_config.fx_graph_cache


def test_compile_cache_default_lives_under_hf_home(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    path = configure_compile_cache(None)
    assert path == tmp_path / "hf" / "flux2-serve" / "compile-cache" and path.is_dir()


def test_auto_compile_is_none_on_cpu() -> None:
    assert resolve_compile(ModelConfig(), torch.device("cpu")) == "none"
    assert resolve_compile(ModelConfig(), torch.device("cuda")) == "regional"
    assert resolve_compile(ModelConfig(compile="full"), torch.device("cuda")) == "full"


def test_fuse_qkv_keeps_the_output() -> None:
    plain = Flux2Engine.from_config(ModelConfig(source="tiny-klein"))
    fused = Flux2Engine.from_config(ModelConfig(source="tiny-klein", fuse_qkv=True))
    attn = fused.pipeline.transformer.transformer_blocks[0].attn
    assert attn.fused_projections and hasattr(attn, "to_qkv")
    want = plain.generate(_request(1)).images[0].astype(np.int16)
    got = fused.generate(_request(1)).images[0].astype(np.int16)
    assert np.abs(want - got).max() <= 2


def test_fp8_is_refused_on_cpu_at_load() -> None:
    with pytest.raises(ModelLoadError, match=r"fp8.*(GPU|Hopper)"):
        Flux2Engine.from_config(ModelConfig(source="tiny-dev", quantization="fp8"))
    with pytest.raises(Fp8Unsupported):
        require_fp8_support("cpu")


def test_rowwise_quantization_round_trip() -> None:
    x = torch.randn(64, 256) * torch.logspace(-3, 3, 64).unsqueeze(1)  # rows of very different scales
    q, scale = quantize_rowwise(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (64, 1)
    back = q.float() * scale
    assert ((back - x).norm(dim=1) / x.norm(dim=1)).max() < 0.05  # e4m3: 3 mantissa bits, per-row scale


def test_swap_linears_skips_small_and_odd_layers() -> None:
    model = torch.nn.Sequential(
        torch.nn.Linear(1024, 2048), torch.nn.Sequential(torch.nn.Linear(2048, 1024)), torch.nn.Linear(1024, 8)
    )
    assert swap_linears(model) == 2
    assert isinstance(model[0], Fp8Linear) and isinstance(model[1][0], Fp8Linear)
    assert isinstance(model[2], torch.nn.Linear)


def test_fp8_linear_matches_linear_where_scaled_mm_runs_on_cpu() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(1024, 1024, bias=True)
    fp8 = Fp8Linear(linear)
    x = torch.randn(2, 7, 1024)
    try:
        y = fp8(x)
    except (RuntimeError, NotImplementedError) as exc:  # older torch: _scaled_mm is CUDA-only
        pytest.skip(f"_scaled_mm does not run on this CPU build: {exc}")
    ref = linear(x)
    assert y.shape == ref.shape
    assert ((y.float() - ref).norm() / ref.norm()).item() < 0.06


def test_device_jpeg_is_refused_on_cpu_and_off_by_default() -> None:
    with pytest.raises(ModelLoadError, match=r"device_jpeg.*GPU"):
        Flux2Engine.from_config(ModelConfig(source="tiny-klein", device_jpeg=True))
    engine = Flux2Engine.from_config(ModelConfig(source="tiny-klein"))
    assert engine.config.device_jpeg is False and engine.info.device_jpeg is False
    result = engine.generate(dataclasses.replace(_request(1), jpeg_quality=90))
    assert result.images[0].shape == (64, 64, 3) and result.images[0].dtype == np.uint8
    assert result.timings.output_s >= 0 and result.timings.generate_s > 0
