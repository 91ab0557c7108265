"""Plain diffusers vs this engine, in one process per model, against the matmul floors.

    python -m bench engine klein4b --json out.json [--budget 540] [--skip vram,fp8]

Sections, in order; each writes the JSON as it finishes. A section that would not fit in what is left of
``--budget`` (keeping back the time of the sections after it) is skipped, and the JSON says so.

ceiling       bf16 (burst and sustained) and fp8 8192³ matmul rates, measured in this process
floors        FLOPs of one transformer step per shape (FlopCounterMode on ``meta``) over each rate
load          random full-size weights built on the GPU, written with ``save_pretrained`` and read back
              from local disk (klein: the pipeline; dev: the transformer, then text encoder and VAE built)
plain         the diffusers pipeline called as is, eager bf16: end-to-end p50/p95 per shape and step count,
              every transformer call timed with CUDA events, peak VRAM; one step's inputs and the final
              latents kept for the deviation of what follows
engine_build  the same pipeline made this engine (``Flux2Engine`` defaults: regional compile, compiled VAE
              and text encoder), warmed up
engine        the same series, and the deviation from plain eager
vram          the VRAM policy's cost: on_pressure, always, on_pressure again
fp8           the transformer's linears swapped to fp8 in place, warmed again: the same series, deviation

``tiny`` runs all of it on the tiny model, on a CPU (no FLOPs, no fp8): a dry run of the plumbing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.lib.cli import suite_parser
from bench.lib.deviation import compare
from bench.lib.device import cuda_ok, free_cuda, gib, sync
from bench.lib.floors import floors_ms, matmul_ceiling, transformer_step_flops
from bench.lib.pipeline_timing import StepTimer, timed_series
from bench.lib.requests import UNCACHED, family_of_source, make_request, run_plain
from bench.lib.results import Deadline, Results, log
from bench.lib.timing import summary

if TYPE_CHECKING:
    import torch

SECTIONS = ("ceiling", "floors", "load", "plain", "engine_build", "engine", "vram", "fp8")


@dataclass(frozen=True)
class ModelSpec:
    source: str
    steps: tuple[int, ...]  # step counts timed; the first is the family's default
    series_s: float  # seconds one timed series takes, about
    save: str  # what goes to disk: "pipeline", or "transformer" (dev's 113 GB pipeline does not fit the disk)


MODELS = {
    "klein4b": ModelSpec("random-klein-4b", (4, 8), 20, "pipeline"),
    "klein9b": ModelSpec("random-klein-9b", (4, 8), 20, "pipeline"),
    "dev": ModelSpec("random-dev", (8,), 60, "transformer"),
    "tiny": ModelSpec("tiny-klein", (2,), 5, "pipeline"),
}


def section_s(spec: ModelSpec, name: str) -> float:
    """Seconds a section needs, about: what the budget keeps back for it."""
    series = {"plain": 2, "engine": 2, "vram": 1, "fp8": 1}.get(name, 0) * spec.series_s
    fixed = {"ceiling": 10, "floors": 5, "load": 60, "engine_build": 60, "fp8": 60}.get(name, 0)
    return fixed + series


@dataclass
class Run:
    """What the sections share: the settings, the figures, the time left and what was built so far."""

    args: argparse.Namespace
    spec: ModelSpec
    res: Results
    deadline: Deadline
    work: Path
    sections: list[str] = field(init=False)  # those that will run, in order
    pipeline: Any = None
    engine: Any = None
    captured: dict[str, torch.Tensor] = field(default_factory=dict)  # plain eager's step and latents

    def __post_init__(self) -> None:
        left_out = set(self.args.skip) | ({"floors", "fp8"} if self.tiny else set()) | (set() if cuda_ok() else {"fp8"})
        self.sections = [name for name in SECTIONS if name not in left_out]

    @property
    def tiny(self) -> bool:
        return self.spec.source.startswith("tiny")

    @property
    def family(self) -> str:
        return family_of_source(self.spec.source)

    @property
    def guidance(self) -> float:
        from deployments.engine.flux2_engine import FAMILY_DEFAULTS

        return FAMILY_DEFAULTS[self.family][1]

    @property
    def shapes(self) -> dict[str, tuple[int, int, int]]:
        side = self.args.size
        return {"t2i": (side, side, 0), "edit1": (side, side, 1)}

    def reserve_after(self, name: str) -> float:
        """Seconds kept back for the sections that will run after ``name``."""
        later = self.sections[self.sections.index(name) + 1 :]
        return sum(section_s(self.spec, later_name) for later_name in later)

    def starts(self, name: str) -> bool:
        """Whether section ``name`` runs now; if not, the JSON says why."""
        needed = section_s(self.spec, name) + self.reserve_after(name) if name in self.sections else 0.0
        if name not in self.sections:
            why = "left out (--skip, or not possible on this device or model)"
        elif name in ("engine", "vram", "fp8") and self.engine is None:
            why = "no engine: engine_build was skipped or failed"
        elif not self.deadline.allows(needed):
            why = f"not enough time left ({self.deadline.left():.0f}s < {needed:.0f}s)"
        else:
            log(f"== {name} ({self.deadline.left():.0f}s left)")
            return True
        self.res[f"skipped:{name}"] = why
        return False

    def requests_per_series(self, shape_name: str) -> int:
        return max(5, self.args.n // 2) if self.family == "dev" and shape_name == "edit1" else self.args.n

    def built_pipeline(self) -> Any:
        """The pipeline ``load`` read from disk, or (load skipped, or no room on disk) one built now."""
        if self.pipeline is None:
            self.pipeline = build(self)
        return self.pipeline


def series_per_shape(
    run: Run, key: str, pipeline: Any, call: Callable[[Any, int], Any], step_counts: tuple[int, ...], n: int | None
) -> dict:
    """A timed series per step count and shape, written to ``res[key]`` (``key`` is the section) as each
    finishes. ``call(request, steps)`` runs one request; ``n`` requests a series (None: the model's default)."""
    timer = StepTimer(pipeline.transformer)
    out: dict[str, Any] = {}
    for steps in step_counts:
        for name, (width, height, refs) in run.shapes.items():
            label = f"{name}:{steps}steps"
            if not run.deadline.allows(run.spec.series_s + run.reserve_after(key)):
                out[label] = "skipped: no time"
                continue
            out[label] = timed_series(
                lambda request, s=steps: call(request, s),
                lambda i, w=width, h=height, r=refs, s=steps: make_request(w, h, r, s, seed=i),
                n or run.requests_per_series(name),
                timer,
            )
            run.res[key] = out
    timer.remove()
    return out


def deviation_from_eager(run: Run, pipeline: Any) -> dict:
    """One transformer step and the final text-to-image latents of ``pipeline`` against plain eager's."""
    import torch

    steps = run.spec.steps[0]
    with torch.inference_mode():
        step = pipeline.transformer(**run.captured["step_in"])
        step = step[0] if isinstance(step, tuple) else step.sample
        request = make_request(*run.shapes["t2i"], steps, seed=0)
        latents = run_plain(pipeline, request, steps, run.guidance, "latent")
    return {
        "one_step": compare(step, run.captured["step_out"]),
        "final_latents": compare(latents, run.captured["latents"]),
    }


def measure_ceiling(run: Run) -> None:
    run.res["ceiling"] = matmul_ceiling()


def count_floors(run: Run) -> None:
    # the measured rates; 790 TFLOP/s (the H200's burst rate) where the ceiling was not measured
    ceiling = run.res.get("ceiling") if "tflops" in (run.res.get("ceiling") or {}) else {"tflops": 790.0}
    out = {}
    for name, (width, height, refs) in run.shapes.items():
        flops = transformer_step_flops(run.spec.source, width, height, refs)
        out[name] = {"tflop": round(flops / 1e12, 2), **floors_ms(flops, ceiling)}
    run.res["flops_per_step"] = out


def build(run: Run, components: tuple[str, ...] = ("transformer", "text_encoder", "vae")) -> Any:
    """The model's pipeline with random weights on this device (the tiny one: always whole)."""
    import torch

    from deployments.engine.synthetic.random_weights import build_random_pipeline
    from deployments.engine.synthetic.tiny import build_tiny_klein

    if run.tiny:
        return build_tiny_klein()
    return build_random_pipeline(run.spec.source, device="cuda", dtype=torch.bfloat16, components=components)


def save_and_load(run: Run) -> None:
    """Write the random weights with ``save_pretrained``, then time reading them back from local disk.
    Files written seconds before may still be in the page cache: a warm-cache load time."""
    from deployments.engine.synthetic.random_weights import count_parameters, save_random_pipeline

    whole = run.spec.save == "pipeline"
    components = ("transformer", "text_encoder", "vae") if whole else ("transformer",)
    start = time.perf_counter()
    pipeline = build(run, components)
    info: dict[str, Any] = {"build_s": round(time.perf_counter() - start, 2), "components": components}
    if not run.tiny:
        params = {name: count_parameters(getattr(pipeline, name)) for name in components}
        info["params_b"] = {name: round(count / 1e9, 3) for name, count in params.items()}
        need, free = sum(params.values()) * 2 / 2**30, shutil.disk_usage(run.work).free / 2**30
        if free < need * 1.03 + 1:
            run.res["build_save"] = info | {"save": f"skipped: {need:.1f} GiB needed, {free:.1f} GiB free"}
            return
    folder = run.work / "model"
    saved = save_random_pipeline(run.spec.source, folder, pipeline=pipeline, component=None if whole else "transformer")
    run.res["build_save"] = info | {"save_s": round(saved["save_s"], 2), "size_gib": gib(saved["bytes"])}
    del pipeline
    free_cuda()
    sync()
    start = time.perf_counter()
    run.pipeline = load_saved(run, folder, whole)
    sync()
    run.res["load_from_disk"] = {"what": components, "s": round(time.perf_counter() - start, 2)}
    if not whole:
        start = time.perf_counter()
        run.pipeline = with_text_encoder_and_vae(run, run.pipeline)
        run.res["build_text_encoder_vae_s"] = round(time.perf_counter() - start, 2)
    shutil.rmtree(folder, ignore_errors=True)


def load_saved(run: Run, folder: Path, whole: bool) -> Any:
    """The folder ``save_and_load`` wrote, read back: a klein pipeline, or dev's transformer alone."""
    import torch
    from diffusers import Flux2KleinPipeline, Flux2Transformer2DModel

    if not whole:
        return Flux2Transformer2DModel.from_pretrained(folder, torch_dtype=torch.bfloat16, device_map="cuda")
    dtype, device = (torch.bfloat16, "cuda") if cuda_ok() else (torch.float32, "cpu")
    return Flux2KleinPipeline.from_pretrained(folder, torch_dtype=dtype).to(device)


def with_text_encoder_and_vae(run: Run, transformer: Any) -> Any:
    """Dev's pipeline around a loaded transformer: the text encoder and VAE built beside it."""
    from diffusers import Flux2Pipeline

    rest = build(run, ("text_encoder", "vae"))
    return Flux2Pipeline(
        scheduler=rest.scheduler,
        vae=rest.vae,
        text_encoder=rest.text_encoder,
        tokenizer=rest.tokenizer,
        transformer=transformer,
    )


def plain(run: Run) -> None:
    """Plain diffusers: the series, then one step's real inputs and outputs and the final latents."""
    pipeline, steps = run.built_pipeline(), run.spec.steps
    pipeline.set_progress_bar_config(disable=True)
    series_per_shape(run, "plain", pipeline, lambda r, s: run_plain(pipeline, r, s, run.guidance), steps, None)
    timer = StepTimer(pipeline.transformer)
    timer.capture_next = True
    request = make_request(*run.shapes["t2i"], steps[0], seed=0)
    latents = run_plain(pipeline, request, steps[0], run.guidance, "latent")
    run.captured.update(step_in=timer.captured, step_out=timer.captured_out, latents=latents.detach().float().clone())
    timer.take_ms()
    timer.remove()


def build_engine(run: Run) -> None:
    """The same pipeline, optimised in place by the engine's defaults and warmed up."""
    import torch

    from deployments.config import ModelConfig, Shape
    from deployments.engine import Flux2Engine, warm_up
    from deployments.engine.load import LoadedPipeline
    from deployments.engine.optimize import apply_optimizations
    from deployments.engine.text_encoder import trim_text_encoder

    warmup = [Shape(width=w, height=h, references=r) for w, h, r in run.shapes.values()]
    config = ModelConfig(
        source=run.spec.source,
        compile="none" if run.tiny else "regional",
        compile_cache_dir=str(run.args.cache or run.work / "compile-cache"),
        warmup_shapes=tuple(warmup),
        vram_policy="on_pressure",
        **UNCACHED,  # its series repeat one request
    )
    pipeline, device = run.built_pipeline(), torch.device("cuda" if cuda_ok() else "cpu")
    weights = "random-tiny" if run.tiny else "random-full"
    loaded = LoadedPipeline(pipeline, run.spec.source, run.family, weights, device, pipeline.transformer.dtype)
    start = time.perf_counter()
    trim_text_encoder(pipeline)  # as load_pipeline does for every served engine (bit for bit the same embeddings)
    compiled = apply_optimizations(pipeline, config, device)
    engine = Flux2Engine(loaded, config, compile=compiled)
    optimized = time.perf_counter()
    warmup_s = warm_up(engine)
    sync()
    run.res["engine_build"] = {
        "optimize_s": round(optimized - start, 2),
        "warmup_s": round(time.perf_counter() - optimized, 2),
        "warmup_detail_s": {key: round(value, 3) for key, value in warmup_s.items()},
        "compile_cache": config.compile_cache_dir,
        "vram_allocated_gib": gib(torch.cuda.memory_allocated()) if cuda_ok() else 0,
    }
    run.engine = engine


def engine_series(run: Run, key: str = "engine", n: int | None = None) -> None:
    """The engine's series (``key``: "engine", or "fp8" with the first step count), and its deviation."""
    step_counts = run.spec.steps if key == "engine" else run.spec.steps[:1]
    pipeline = run.engine.pipeline  # the request holds its step count: the engine call needs no other
    out = series_per_shape(run, key, pipeline, lambda request, steps: run.engine.generate(request), step_counts, n)
    if run.captured:
        out["deviation_vs_eager"] = deviation_from_eager(run, run.engine.pipeline)
    run.res[key] = out


def vram_policy(run: Run) -> None:
    """Latency with each VRAM policy: ``always`` empties the cache after every request."""
    out: dict[str, Any] = {}
    n = run.args.n if run.family == "klein" else 3
    for policy in ("on_pressure", "always", "on_pressure"):
        run.engine.memory.policy = policy
        latencies = []
        for i in range(n):
            sync()
            start = time.perf_counter()
            run.engine.generate(make_request(*run.shapes["t2i"], run.spec.steps[0], seed=i))
            sync()
            latencies.append(time.perf_counter() - start)
        out.setdefault(policy, []).append(summary(latencies))
    run.engine.memory.policy = "on_pressure"
    out["releases_total"] = run.engine.memory.cache_releases
    run.res["vram_policy"] = out


def fp8(run: Run) -> None:
    """The warmed engine's transformer swapped to fp8 linears in place, its compiled blocks traced again."""
    import torch

    from deployments.engine import warm_up
    from deployments.engine.fp8 import quantize_transformer_fp8

    start = time.perf_counter()
    torch._dynamo.reset()
    swapped = quantize_transformer_fp8(run.engine.pipeline.transformer)
    free_cuda()
    swap_s = time.perf_counter() - start
    warm_up(run.engine)
    run.res["fp8_build"] = {
        "swap_s": round(swap_s, 2),
        "linears": swapped,
        "warmup_s": round(time.perf_counter() - start - swap_s, 2),
        "vram_allocated_gib": gib(torch.cuda.memory_allocated()),
    }
    engine_series(run, "fp8", n=5 if run.family == "klein" else 3)


STEPS: dict[str, Callable[[Run], None]] = {
    "ceiling": measure_ceiling,
    "floors": count_floors,
    "load": save_and_load,
    "plain": plain,
    "engine_build": build_engine,
    "engine": engine_series,
    "vram": vram_policy,
    "fp8": fp8,
}


def pick_workdir(need_gib: float) -> Path:
    """The candidate folder with the most free disk."""
    best, best_free = Path("/tmp"), -1.0
    for candidate in ("/tmp", "/root", "/var/tmp"):
        try:
            free = shutil.disk_usage(candidate).free / 2**30
        except OSError:
            continue
        if free > best_free:
            best, best_free = Path(candidate), free
    log(f"work dir {best} ({best_free:.1f} GiB free, need {need_gib:.0f})")
    return best / "flux2-bench"


def sections(text: str) -> list[str]:
    """``--skip vram,fp8`` -> ["vram", "fp8"]; a name that is no section is an error, not a silent no-op."""
    names = [name for name in text.split(",") if name]
    unknown = set(names) - set(SECTIONS)
    if unknown:
        raise argparse.ArgumentTypeError(f"no section {sorted(unknown)}; sections: {', '.join(SECTIONS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = suite_parser("engine", __doc__)
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("--json", required=True, help="where the figures go (written after every section)")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds this command may take")
    parser.add_argument("--n", type=int, default=10, help="timed requests per series")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--skip", type=sections, default=[], help=f"sections to leave out, of {','.join(SECTIONS)}")
    parser.add_argument("--work", type=Path, default=None, help="folder for the saved weights (default: most free)")
    parser.add_argument("--cache", default=None, help="compile cache folder (default: a fresh one in --work)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    import diffusers
    import torch
    import transformers

    spec = MODELS[args.model]
    work = args.work or pick_workdir(70 if family_of_source(spec.source) == "dev" else 20)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    run = Run(args, spec, Results(args.json), Deadline(args.budget), work)
    run.res["env"] = {
        "model": args.model,
        "source": spec.source,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name() if cuda_ok() else "none",
        "argv": sys.argv,
        "size": args.size,
        "guidance": run.guidance,
        "text_tokens": 512,
    }
    for name, step in STEPS.items():
        if not run.starts(name):
            continue
        try:
            step(run)
        except Exception as exc:  # one section failing must not lose the others' figures
            traceback.print_exc()
            run.res[f"error:{name}"] = repr(exc)[:1000]
        free_cuda()
    run.res["elapsed_s"] = round(args.budget - run.deadline.left(), 1)
    log("done")
