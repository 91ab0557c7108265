"""FLUX.2 GPU benchmark, one process per model: plain diffusers eager bf16 vs this engine.

    OUT=<dir> python -m bench.run_bench klein4b --budget 540
    OUT=<dir> python -m bench.run_bench dev --budget 540

Sections (each writes ``$OUT/bench_<model>.json`` as it finishes; a section that would not fit in
the remaining ``--budget`` seconds is skipped and recorded as skipped):

1. bf16 (and fp8) matmul ceiling, 8192^3, in this process.
2. FLOPs of one transformer step per shape (FlopCounterMode on ``meta``) -> floor = FLOPs / ceiling (burst and
   sustained).
3. Random full-size weights built on the GPU, saved with ``save_pretrained`` (klein: whole pipeline;
   dev: transformer alone), then loaded from local disk with ``from_pretrained``.
4. Replica ready time, cold then warm compile cache: two fresh subprocesses (``bench.ready``).
5. Plain diffusers eager bf16: end-to-end p50/p95 per shape and step count, per-step transformer
   time (CUDA events around each transformer call inside the real requests), peak VRAM.
6. This engine (``Flux2Engine``, regional compile, warmed): the same; VRAM policy always vs
   on_pressure; mixed back-to-back requests counting OOMs and GPU idle fraction.
7. fp8 (``quantization: fp8`` + regional compile): step time and deviation from bf16 eager on one
   step's real inputs and on the final latents.
8. The same requests through Ray Serve over HTTP (``bench.serve_bench``), klein only.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from bench.common import (
    REPO,
    Deadline,
    GpuUtilSampler,
    Results,
    StepTimer,
    compare,
    cuda_ok,
    floors_ms,
    gib,
    make_request,
    matmul_ceiling,
    summary,
    sync,
    transformer_step_flops,
)

MODELS = {
    # source, default steps, seed steps, save what, shapes (w, h, refs)
    "klein4b": dict(source="random-klein-4b", steps=(4, 8), save="pipeline"),
    "klein9b": dict(source="random-klein-9b", steps=(4, 8), save="pipeline"),
    "dev": dict(source="random-dev", steps=(8,), save="transformer"),
    # CPU dry runs of the script's logic (tiny shapes, no compile)
    "tiny": dict(source="tiny-klein", steps=(2,), save="pipeline"),
}
MIXED_SHAPES = [(1024, 1024, 0), (1024, 1024, 1), (768, 1344, 0), (1344, 768, 1), (512, 512, 0), (1024, 1024, 2)]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_cuda() -> None:
    gc.collect()
    if cuda_ok():
        torch.cuda.empty_cache()


def peak_reset() -> None:
    if cuda_ok():
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    return gib(torch.cuda.max_memory_allocated()) if cuda_ok() else 0.0


def pick_workdir(need_gib: float) -> Path:
    """The candidate folder with the most free disk (RAM-backed tmpfs is reported as such)."""
    best, best_free = None, -1.0
    for candidate in (os.environ.get("BENCH_WORK"), "/tmp", "/root", "/var/tmp", str(REPO / ".bench-work")):
        if not candidate:
            continue
        path = Path(candidate)
        try:
            path.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(path).free / 2**30
        except OSError:
            continue
        if free > best_free:
            best, best_free = path, free
    log(f"work dir {best} ({best_free:.1f} GiB free, need {need_gib:.0f})")
    return best / "flux2-bench"


def run_plain(pipeline, request, steps: int, guidance: float, output_type: str = "np"):
    """What a user of plain diffusers writes: the pipeline call, at the engine's settings."""
    from PIL import Image

    references = [Image.fromarray(image) for image in request.images] or None
    generator = [torch.Generator("cpu").manual_seed(request.seed)]
    with torch.inference_mode():
        output = pipeline(
            image=references,
            prompt=request.prompt,
            height=request.height,
            width=request.width,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator,
            output_type=output_type,
        )
    if output_type == "latent":
        return output.images
    return np.clip(np.rint(output.images * 255.0), 0, 255).astype(np.uint8)


def timed_series(call, request_for, n: int, timer: StepTimer | None) -> dict:
    """One untimed request, then ``n`` timed ones: e2e latency, per-step transformer ms, peak VRAM."""
    call(request_for(1000))
    if timer:
        timer.take_ms()
    latencies, steps_ms, peaks = [], [], []
    for i in range(n):
        peak_reset()
        sync()
        t0 = time.perf_counter()
        call(request_for(i))
        sync()
        latencies.append(time.perf_counter() - t0)
        peaks.append(peak_gib())
        if timer:
            steps_ms.extend(timer.take_ms())
    out = {"e2e_s": summary(latencies), "peak_vram_gib": max(peaks) if peaks else None}
    if steps_ms:
        out["transformer_step_ms"] = summary(steps_ms)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("--budget", type=float, default=540.0, help="seconds this command may take")
    parser.add_argument("--n", type=int, default=10, help="timed requests per series")
    parser.add_argument("--mixed", type=int, default=200)
    parser.add_argument("--mixed-budget", type=float, default=90.0, help="seconds the mixed run may take at most")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--skip", default="", help="comma-separated sections to skip")
    parser.add_argument("--keep-files", action="store_true")
    args = parser.parse_args()
    deadline = Deadline(args.budget)
    spec = MODELS[args.model]
    source = spec["source"]
    tiny = source.startswith("tiny")
    skip = set(filter(None, args.skip.split(",")))
    size = args.size
    shapes = {"t2i": (size, size, 0), "edit1": (size, size, 1)}
    res = Results(f"bench_{args.model}")

    import diffusers
    import transformers

    from deployments.config import ModelConfig, Shape
    from deployments.engine import Flux2Engine, warm_up
    from deployments.engine.generate import FAMILY_DEFAULTS
    from deployments.engine.load import LoadedPipeline
    from deployments.engine.optimize import apply_optimizations
    from deployments.engine.synthetic.random_weights import build_random_pipeline, count_parameters, save_random_pipeline
    from deployments.types import EngineOverloaded

    family = "dev" if source.endswith("dev") else "klein"
    guidance = FAMILY_DEFAULTS[family][1]
    res["env"] = {
        "model": args.model,
        "source": source,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name() if cuda_ok() else "none",
        "argv": sys.argv,
        "budget_s": args.budget,
        "size": size,
        "guidance": guidance,
        "text_tokens": 512,
    }

    def section(name: str, needs_s: float):
        if name in skip:
            res[f"skipped:{name}"] = "skipped by --skip"
            return False
        if not deadline.allows(needs_s):
            res[f"skipped:{name}"] = f"not enough time left ({deadline.left():.0f}s < {needs_s:.0f}s)"
            return False
        log(f"== {name} ({deadline.left():.0f}s left)")
        return True

    def guarded(name: str, fn) -> None:
        try:
            fn()
        except Exception as exc:
            traceback.print_exc()
            res[f"error:{name}"] = repr(exc)[:1000]
        free_cuda()

    # 1. ceiling -------------------------------------------------------------------------------
    if section("ceiling", 10):
        guarded("ceiling", lambda: res.__setitem__("ceiling", matmul_ceiling()))
    # burst and sustained rates (docs/benchmarks.md, fourth run); 790 TFLOP/s where the ceiling was skipped
    ceiling = res.get("ceiling") if "tflops" in (res.get("ceiling") or {}) else {"tflops": 790.0}

    # 2. FLOPs per step and the floor ------------------------------------------------------------
    if not tiny and section("flops", 5):

        def flops() -> None:
            out = {}
            for name, (w, h, refs) in shapes.items():
                f = transformer_step_flops(source, w, h, refs)
                out[name] = {"tflop": round(f / 1e12, 2), **floors_ms(f, ceiling)}
            res["flops_per_step"] = out

        guarded("flops", flops)

    work = pick_workdir(70 if family == "dev" else 20)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    folder = work / "model"
    cache_dir = work / "compile-cache"
    state: dict = {}

    # 3. build random weights on the GPU, save, load from disk -----------------------------------
    if section("build_save_load", 60):

        def build_save_load() -> None:
            device = "cuda" if cuda_ok() else "cpu"
            dtype = torch.bfloat16 if cuda_ok() else torch.float32
            if tiny:
                from deployments.engine.synthetic.tiny import build_tiny_klein

                pipe = build_tiny_klein()
                pipe.save_pretrained(folder)
                res["build_save"] = {"tiny": True}
            else:
                comps = ("transformer",) if spec["save"] == "transformer" else ("transformer", "text_encoder", "vae")
                t0 = time.perf_counter()
                pipe = build_random_pipeline(source, device=device, dtype=dtype, components=comps)
                build_s = time.perf_counter() - t0
                need = sum(count_parameters(getattr(pipe, c)) for c in comps) * 2 / 2**30
                free = shutil.disk_usage(work).free / 2**30
                info = {
                    "build_on_gpu_s": round(build_s, 2),
                    "components": comps,
                    "params_b": {c: round(count_parameters(getattr(pipe, c)) / 1e9, 3) for c in comps},
                    "disk_free_gib": round(free, 1),
                }
                if free < need * 1.03 + 1:
                    info["save"] = f"skipped: {need:.1f} GiB needed, {free:.1f} GiB free; load time not measured"
                    res["build_save"] = info
                    if spec["save"] == "transformer":
                        state["transformer"] = pipe.transformer
                    else:
                        pipe.set_progress_bar_config(disable=True)
                        state["plain"] = pipe
                    return
                saved = save_random_pipeline(
                    source, folder, pipeline=pipe, component="transformer" if spec["save"] == "transformer" else None
                )
                info.update(save_s=round(saved["save_s"], 2), size_gib=gib(saved["bytes"]))
                res["build_save"] = info
                del pipe
                free_cuda()
            # load from local disk (page cache may hold part of what was just written: see docs)
            sync()
            t0 = time.perf_counter()
            if spec["save"] == "transformer" and not tiny:
                from diffusers import Flux2Transformer2DModel

                transformer = Flux2Transformer2DModel.from_pretrained(
                    folder, torch_dtype=torch.bfloat16, device_map="cuda"
                )
                sync()
                res["load_from_disk"] = {
                    "what": "transformer (device_map=cuda)",
                    "s": round(time.perf_counter() - t0, 2),
                }
                state["transformer"] = transformer
            else:
                from diffusers import Flux2KleinPipeline

                pipe = Flux2KleinPipeline.from_pretrained(
                    folder, torch_dtype=torch.bfloat16 if cuda_ok() else torch.float32
                ).to("cuda" if cuda_ok() else "cpu")
                sync()
                res["load_from_disk"] = {"what": "whole pipeline", "s": round(time.perf_counter() - t0, 2)}
                state["plain"] = pipe

        guarded("build_save_load", build_save_load)

    engine_source = str(folder) if (folder / "model_index.json").exists() else source
    warm_shapes = [Shape(width=w, height=h, references=r) for (w, h, r) in shapes.values()]
    mixed_shapes = [] if tiny else MIXED_SHAPES
    if family == "klein" and not tiny:
        warm_shapes += [Shape(width=768, height=1344, references=0), Shape(width=512, height=512, references=0)]
    if tiny:
        warm_shapes = [Shape(width=64, height=64, references=0), Shape(width=64, height=64, references=1)]

    # 4. replica ready time: cold then warm compile cache, fresh processes ------------------------
    if family == "klein" and section("ready_cold_warm", 200):

        def ready() -> None:
            shape_arg = ",".join(f"{s.width}x{s.height}+{s.references}" for s in warm_shapes)
            out = {}
            for label in ("cold", "warm"):
                if not deadline.allows(80):
                    out[label] = "skipped: no time"
                    continue
                target = work / f"ready_{label}.json"
                cmd = [
                    sys.executable, "-m", "bench.ready", "--source", engine_source, "--cache", str(cache_dir),
                    "--json", str(target), "--shapes", shape_arg, "--steps", str(spec["steps"][0]),
                    "--size", f"{size}x{size}+0", "--compile", "regional" if not tiny else "none",
                ]  # fmt: skip
                t0 = time.perf_counter()
                proc = subprocess.run(
                    cmd, cwd=REPO, capture_output=True, text=True, timeout=max(60, deadline.left() - 60)
                )
                wall = time.perf_counter() - t0
                if proc.returncode != 0:
                    out[label] = {"error": proc.stderr[-2000:]}
                    continue
                out[label] = json.loads(target.read_text()) | {"subprocess_wall_s": round(wall, 2)}
                res["ready"] = out
            if isinstance(out.get("cold"), dict) and isinstance(out.get("warm"), dict) and "error" not in out["warm"]:
                out["warm_over_cold_engine_ready"] = round(
                    out["warm"]["ready_s_from_engine_start"] / out["cold"]["ready_s_from_engine_start"], 3
                )
            res["ready"] = out

        guarded("ready", ready)

    # 5. plain diffusers eager bf16 -------------------------------------------------------------
    if "plain" not in state and "transformer" in state and section("assemble_dev", 60):

        def assemble() -> None:
            t0 = time.perf_counter()
            rest = build_random_pipeline(
                source, device="cuda", dtype=torch.bfloat16, components=("text_encoder", "vae")
            )
            rest.transformer = None
            from diffusers import Flux2Pipeline

            pipe = Flux2Pipeline(
                scheduler=rest.scheduler,
                vae=rest.vae,
                text_encoder=rest.text_encoder,
                tokenizer=rest.tokenizer,
                transformer=state.pop("transformer"),
            )
            pipe.set_progress_bar_config(disable=True)
            state["plain"] = pipe
            res["assemble_dev"] = {
                "build_text_encoder_vae_s": round(time.perf_counter() - t0, 2),
                "vram_gib": gib(torch.cuda.memory_allocated()),
            }

        guarded("assemble_dev", assemble)

    captured: dict = {}

    def deviation_from_eager(pipeline) -> dict:
        """One transformer step and the final t2i latents of ``pipeline`` against the eager run's captures."""
        with torch.inference_mode():
            step = pipeline.transformer(**captured["step_in"])
            step = step[0] if isinstance(step, tuple) else step.sample
            steps = spec["steps"][0]
            lat = run_plain(pipeline, make_request(*shapes["t2i"], steps, seed=0), steps, guidance, "latent")
        return {
            "one_step": compare(step, captured["step_out"]),
            "final_latents": compare(lat, captured["latents"]),
        }

    n_for = {"t2i": args.n, "edit1": args.n}
    if family == "dev":
        n_for = {"t2i": args.n, "edit1": max(5, args.n // 2)}
    per_series_s = {"klein": 20, "dev": 60}[family] if not tiny else 5
    plain_margin, engine_margin = (200, 150) if family == "klein" else (150, 60)

    if "plain" in state and section("plain_eager", per_series_s * 2):

        def plain() -> None:
            pipe = state["plain"]
            pipe.set_progress_bar_config(disable=True)
            timer = StepTimer(pipe.transformer)
            out = {}
            for steps in spec["steps"]:
                for name, (w, h, refs) in shapes.items():
                    if not deadline.allows(per_series_s + plain_margin):
                        out[f"{name}:{steps}steps"] = "skipped: no time"
                        continue
                    out[f"{name}:{steps}steps"] = timed_series(
                        lambda r, s=steps: run_plain(pipe, r, s, guidance),
                        lambda i, w=w, h=h, refs=refs, s=steps: make_request(w, h, refs, s, seed=i),
                        n_for[name],
                        timer,
                    )
                    res["plain_eager"] = out
            # one step's real inputs/outputs and the final latents, for numerical comparisons
            timer.capture_next = True
            lat = run_plain(
                pipe, make_request(*shapes["t2i"], spec["steps"][0], seed=0), spec["steps"][0], guidance, "latent"
            )
            captured["step_in"] = timer.captured
            captured["step_out"] = timer.captured_out
            captured["latents"] = lat.detach().float().clone()
            timer.take_ms()
            timer.remove()
            res["plain_eager"] = out

        guarded("plain_eager", plain)

    # 6. the engine ----------------------------------------------------------------------------------
    engine_cfg = dict(
        source=engine_source,
        compile="regional" if not tiny else "none",
        compile_cache_dir=str(cache_dir),
        warmup_shapes=tuple(warm_shapes),
        vram_policy="on_pressure",
    )
    engine = None
    if section("engine_build", 60):

        def build_engine() -> None:
            nonlocal engine
            config = ModelConfig(**engine_cfg)
            t0 = time.perf_counter()
            if "plain" in state and engine_source == source:  # dev: reuse the assembled pipeline
                pipe = state.pop("plain")
                loaded = LoadedPipeline(pipe, source, family, "random-full", torch.device("cuda"), torch.bfloat16)
                from deployments.engine.optimize import resolve_compile

                apply_optimizations(pipe, config, loaded.device)
                eng = Flux2Engine(loaded, config, compile_mode=resolve_compile(config, loaded.device))
            else:
                state.pop("plain", None)
                free_cuda()
                eng = Flux2Engine.from_config(config)
            t1 = time.perf_counter()
            times = warm_up(eng)
            sync()
            res["engine_build"] = {
                "from_config_s": round(t1 - t0, 2),
                "warmup_s": round(time.perf_counter() - t1, 2),
                "warmup_detail_s": {k: round(v, 3) for k, v in times.items()},
                "cache": "warm (after the ready subprocesses)" if family == "klein" else "cold (fresh cache dir)",
                "vram_allocated_gib": gib(torch.cuda.memory_allocated()) if cuda_ok() else 0,
            }
            engine = eng

        guarded("engine_build", build_engine)

    if engine is not None and section("engine_e2e", per_series_s * 2):

        def engine_e2e() -> None:
            timer = StepTimer(engine.pipeline.transformer)
            out = {}
            for steps in spec["steps"]:
                for name, (w, h, refs) in shapes.items():
                    if not deadline.allows(per_series_s + engine_margin):
                        out[f"{name}:{steps}steps"] = "skipped: no time"
                        continue
                    out[f"{name}:{steps}steps"] = timed_series(
                        engine.generate,
                        lambda i, w=w, h=h, refs=refs, s=steps: make_request(w, h, refs, s, seed=i),
                        n_for[name],
                        timer,
                    )
                    res["engine"] = out
            if "step_in" in captured:
                out["deviation_vs_eager"] = deviation_from_eager(engine.pipeline)
            timer.take_ms()
            timer.remove()
            res["engine"] = out

        guarded("engine_e2e", engine_e2e)

    if engine is not None and section("vram_policy", 25 if family == "klein" else 60):

        def policy() -> None:
            out = {}
            n = args.n if family == "klein" else 3
            steps = spec["steps"][0]
            for pol in ("on_pressure", "always", "on_pressure"):
                engine.memory.policy = pol
                lat = []
                for i in range(n):
                    sync()
                    t0 = time.perf_counter()
                    engine.generate(make_request(*shapes["t2i"], steps, seed=i))
                    sync()
                    lat.append(time.perf_counter() - t0)
                out.setdefault(pol, []).append(summary(lat))
            engine.memory.policy = "on_pressure"
            out["releases_total"] = engine.memory.cache_releases
            res["vram_policy"] = out

        guarded("vram_policy", policy)

    # time kept back for the sections after the mixed run, unless --skip leaves them out
    fp8_reserve = 0 if "fp8" in skip else 100 if family == "klein" else 150
    serve_reserve = 120 if family == "klein" and not tiny and "serve" not in skip else 0
    if engine is not None and mixed_shapes and section("mixed", 30 + fp8_reserve):

        def mixed() -> None:
            rng = random.Random(0)
            steps = spec["steps"][0] if family == "klein" else 8
            # at least 30 s, at most --mixed-budget; leave room for fp8 and (if possible) Ray Serve
            budget_s = max(30.0, min(args.mixed_budget, deadline.left() - fp8_reserve - serve_reserve))
            ooms = errors = done = 0
            by_shape: dict[str, list[float]] = {}
            engine.memory.reset_peak()
            compiles_before = engine.unwarmed_compiles
            peak = 0.0
            sampler = GpuUtilSampler()
            t_start = time.perf_counter()
            with sampler:
                for i in range(args.mixed):
                    if time.perf_counter() - t_start > budget_s:
                        break
                    w, h, refs = rng.choice(mixed_shapes)
                    t0 = time.perf_counter()
                    try:
                        result = engine.generate(make_request(w, h, refs, steps, seed=i))
                        peak = max(peak, result.timings.get("peak_vram_gb", 0.0))
                    except EngineOverloaded:
                        ooms += 1
                    except torch.OutOfMemoryError:
                        ooms += 1
                    except Exception:
                        errors += 1
                        traceback.print_exc()
                    done += 1
                    by_shape.setdefault(f"{w}x{h}+{refs}", []).append(time.perf_counter() - t0)
            wall = time.perf_counter() - t_start
            res["mixed"] = {
                "requests": done,
                "requested": args.mixed,
                "steps": steps,
                "ooms": ooms,
                "oom_recoveries": engine.memory.oom_recoveries,
                "other_errors": errors,
                "unwarmed_shape_compiles": engine.unwarmed_compiles - compiles_before,
                "wall_s": round(wall, 1),
                "images_per_s": round(done / wall, 3),
                "peak_vram_gib_max": round(peak, 2),
                "gpu_util": sampler.result(),
                "latency_s_by_shape": {k: summary(v) for k, v in sorted(by_shape.items())},
            }

        guarded("mixed", mixed)

    # 7. fp8 --------------------------------------------------------------------------------------------
    if not tiny and cuda_ok() and section("fp8", 80 if family == "klein" else 90):

        def fp8() -> None:
            nonlocal engine
            out: dict = {}
            if family == "klein":
                # a fresh engine with quantization: fp8, from the same folder, same cache folder
                engine = None
                free_cuda()
                config = ModelConfig(**(engine_cfg | {"quantization": "fp8", "warmup_shapes": tuple(warm_shapes[:2])}))
                t0 = time.perf_counter()
                eng = Flux2Engine.from_config(config)
                t1 = time.perf_counter()
                warm_up(eng)
                out["build"] = {"from_config_s": round(t1 - t0, 2), "warmup_s": round(time.perf_counter() - t1, 2)}
            else:
                # dev: swap the warmed engine's transformer in place, re-trace the compiled blocks
                from deployments.engine.fp8 import quantize_transformer_fp8

                eng = engine
                t0 = time.perf_counter()
                torch._dynamo.reset()
                swapped = quantize_transformer_fp8(eng.pipeline.transformer)
                free_cuda()
                t1 = time.perf_counter()
                warm_up(eng, tuple(warm_shapes[:2]))
                out["build"] = {
                    "swap_s": round(t1 - t0, 2),
                    "linears": swapped,
                    "warmup_s": round(time.perf_counter() - t1, 2),
                }
            out["vram_allocated_gib"] = gib(torch.cuda.memory_allocated())
            timer = StepTimer(eng.pipeline.transformer)
            for steps in spec["steps"][:1]:
                for name, (w, h, refs) in shapes.items():
                    n = 5 if family == "klein" else 3
                    if not deadline.allows(30 + serve_reserve):
                        out[f"{name}:{steps}steps"] = "skipped: no time"
                        continue
                    out[f"{name}:{steps}steps"] = timed_series(
                        eng.generate,
                        lambda i, w=w, h=h, refs=refs, s=steps: make_request(w, h, refs, s, seed=i),
                        n,
                        timer,
                    )
                    res["fp8"] = out
            if "step_in" in captured:
                out["deviation_vs_bf16_eager"] = deviation_from_eager(eng.pipeline)
            timer.take_ms()
            timer.remove()
            res["fp8"] = out
            engine = eng

        guarded("fp8", fp8)

    # 50-step single requests on dev (the default step count), fastest setting in hand
    if family == "dev" and engine is not None and section("dev_50_steps", 25):

        def fifty() -> None:
            sync()
            t0 = time.perf_counter()
            result = engine.generate(make_request(*shapes["t2i"], 50, seed=0))
            sync()
            res["dev_50_steps_t2i"] = {
                "e2e_s": round(time.perf_counter() - t0, 2),
                "setting": "fp8 + regional compile" if "fp8" in res.data else "bf16 regional compile",
                "peak_vram_gib": round(result.timings.get("peak_vram_gb", 0.0), 2),
            }

        guarded("dev_50_steps", fifty)

    engine = None
    state.clear()
    captured.clear()
    free_cuda()

    # 8. Ray Serve -----------------------------------------------------------------------------------
    if family == "klein" and section("serve", 60):

        def serve() -> None:
            target = work / "serve.json"
            cmd = [
                sys.executable, "-m", "bench.serve_bench", "--source", engine_source, "--cache", str(cache_dir),
                "--json", str(target), "--steps", str(spec["steps"][0]), "--size", str(size),
                "--n", str(args.n), "--gpu", "1" if cuda_ok() else "0", "--compile", "regional" if not tiny else "none",
                "--num-cpus", "8" if cuda_ok() else "2",
            ]  # fmt: skip
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=max(30, deadline.left() - 10))
            if proc.returncode != 0 or not target.exists():
                res["serve"] = {"error": (proc.stdout[-1500:] + proc.stderr[-3000:])}
                return
            res["serve"] = json.loads(target.read_text())

        guarded("serve", serve)

    if not args.keep_files:
        shutil.rmtree(folder, ignore_errors=True)
    res["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    res["elapsed_s"] = round(args.budget - deadline.left(), 1)
    log("done")


if __name__ == "__main__":
    main()
