"""LoRA adapters through the engine's own path: first load, switch times, step cost, recompiles, fp8 deviation.

    python -m bench adapters --source random-klein-4b --quantization fp8 --rank 16,64 --json out.json

The engine is ``Flux2Engine.from_config`` with two configured adapters, ``a`` and ``b`` of the two ``--rank`` s,
then ``warm_up`` on the request's shape (so its LoRA slots, padded to the larger rank, are compiled both on and
off). The adapters are random, on every linear layer of the transformer (the most a LoRA can cover), saved in a
temp folder as PEFT-trained ones are published: diffusers' ``save_lora_weights`` with PEFT's ``LoraConfig`` as
metadata. The engine reads them on first use. Each engine (bf16, then with ``--quantization fp8`` an fp8 one on
the same random weights) writes its sections to the JSON as they finish:

build       from_config and warm-up seconds, the slots' and the whole model's VRAM
first_load  each adapter read and switched in on first use (its file is in the page cache: written just before)
steps       ``--n`` text-to-image requests without an adapter, then with ``b``: e2e, transformer step ms, peak VRAM
switches    every kind of switch, ``--rounds`` times each, synchronised: a->b, b->a, to none, from none
scale_sweep ``b`` at each of SCALES (issue 23): rel. L2 of the seed-0 image to the base image, beside the floor
            under it, the slots on but empty (the slots' graph against the base graph)
recompiles  dynamo graphs compiled after warm-up (target 0, the sweep included) and the count of unwarmed shapes

``deviation`` compares the images of seed 0: fp8 vs bf16, each with ``b`` and without, and what ``b`` changes.
``reference:scale_sweep`` runs the same sweep through diffusers' own LoRA on an eager engine with the same
weights and no slots (``load_lora_weights``, then ``set_adapters(adapter_weights=[scale])``), and compares
each engine's images with it. An engine or the reference that would not fit in what is left of ``--budget``
is skipped, and the JSON says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.lib.cli import parse_overrides, suite_parser
from bench.lib.deviation import compare, deviation
from bench.lib.device import cuda_ok, free_cuda, gib, peak_vram_gib, sync
from bench.lib.pipeline_timing import StepTimer, timed_series
from bench.lib.requests import UNCACHED, make_request
from bench.lib.results import Deadline, Results, log
from deployments.config import AdapterSettings, AdapterSpec, ModelConfig, Shape
from deployments.types import AdapterStack, ImageRequest

if TYPE_CHECKING:
    import torch

ADAPTERS = ("a", "b")  # one per --rank; the steps run with b
# (label, adapter switched to), run in this order from a: every kind of switch once a round
SWITCHES = (
    ("a->b", "b"),
    ("b->a", "a"),
    ("a->none", None),
    ("none->a, slot kept a: slots enabled only", "a"),
    ("a->none", None),
    ("none->b, slot held a: rewritten and enabled", "b"),
    ("b->a", "a"),
)
SCALES = (0.25, 1.0, 2.0, 4.0)  # b's scale sweep
EMPTY = "slots on, empty"  # the sweep's floor: the slots' graph with zeros in every slot
REFERENCE_S = 60.0  # the eager reference: build, read b, five eager images (a generous guess, not measured)


def ranks(text: str) -> tuple[int, int]:
    """``16,64`` -> (16, 64): the ranks of adapters a and b."""
    values = tuple(int(part) for part in text.split(",") if part.strip())
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected two positive ranks, e.g. 16,64; got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = suite_parser("adapters", __doc__)
    parser.add_argument("--source", required=True, help="random-klein-4b | random-klein-9b | random-dev | tiny-klein")
    parser.add_argument("--quantization", choices=["fp8"], default=None, help="an fp8 engine after the bf16 one")
    parser.add_argument("--rank", type=ranks, default=(16, 64), help="ranks of adapters a and b (default 16,64)")
    parser.add_argument("--size", type=int, default=1024, help="text-to-image side")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--n", type=int, default=5, help="timed requests per step series")
    parser.add_argument("--rounds", type=int, default=5, help="times each kind of switch is timed")
    parser.add_argument("--option", default="", help="ModelConfig overrides for both engines, key=value,...")
    parser.add_argument("--budget", type=float, default=560.0, help="seconds this command may take")
    parser.add_argument("--engine-s", type=float, default=120.0, help="seconds one engine takes, about (cold compile)")
    parser.add_argument("--json", required=True, help="where the figures go (written after every section)")
    return parser


def write_adapter(transformer: torch.nn.Module, folder: Path, rank: int, seed: int) -> Path:
    """A random rank-``rank`` adapter on every LoRA slot layer of ``transformer`` (its linears), drawn on its
    device (``random_adapters.save_random_adapter``)."""
    import torch
    from peft.tuners.lora import LoraLayer

    from deployments.engine.synthetic.random_adapters import save_random_adapter

    generator = torch.Generator(next(transformer.parameters()).device).manual_seed(seed)
    layers = {name: module for name, module in transformer.named_modules() if isinstance(module, LoraLayer)}
    return save_random_adapter(layers, folder, rank, generator)


def switched_ms(engine: Any, adapter: str | None) -> float:
    """Milliseconds to make ``adapter`` (None: no adapter) the engine's next stack, its copies finished."""
    sync()
    start = time.perf_counter()
    engine.adapters.activate(AdapterStack(((adapter, 1.0),) if adapter else ()))
    sync()
    return (time.perf_counter() - start) * 1e3


def compiled_graphs() -> int:
    import torch

    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def request(args: argparse.Namespace, adapter: str | None, seed: int = 0, scale: float = 1.0) -> ImageRequest:
    plain = make_request(args.size, args.size, 0, args.steps, seed=seed)
    return dataclasses.replace(plain, adapters=AdapterStack(((adapter, scale),) if adapter else ()))


def sweep_images(engine: Any, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """The seed-0 images of ``b`` at each of SCALES, by stack id (``b:0.25``, ...), and with the slots on but
    empty (EMPTY): how far the slots' graph alone moves the base image, under which no scale's effect shows."""
    with engine.adapters.warming():  # a request without adapters runs on the slots' graph, all slots zero
        images = {EMPTY: engine.generate(request(args, None)).images[0]}
    for scale in SCALES:
        images[AdapterStack((("b", scale),)).id] = engine.generate(request(args, "b", scale=scale)).images[0]
    return images


def rel_l2(image: np.ndarray, reference: np.ndarray) -> float:
    return round(deviation(image, reference)["rel_l2"], 5)


def distances(images: dict[str, np.ndarray], base: np.ndarray) -> dict[str, float]:
    return {label: rel_l2(image, base) for label, image in images.items()}


def measure_engine(
    args: argparse.Namespace, res: Results, label: str, config: ModelConfig, folders: dict[str, Path]
) -> dict[str, np.ndarray]:
    """One engine's sections, written to ``res`` as ``label:section``; returns its images of seed 0: without an
    adapter (``none``), with ``b``, and the scale sweep's."""
    import torch

    from deployments.engine import Flux2Engine, warm_up
    from deployments.engine.adapters import SLOT_PREFIX

    ranks = dict(zip(ADAPTERS, args.rank, strict=True))
    before = torch.cuda.memory_allocated() if cuda_ok() else 0  # what an earlier engine left, if anything
    if cuda_ok():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    engine = Flux2Engine.from_config(config)
    built = time.perf_counter()
    transformer = engine.pipeline.transformer
    for seed, (name, folder) in enumerate(folders.items(), start=1):  # read on first use: the first engine writes
        if not folder.exists():
            write_adapter(transformer, folder, ranks[name], seed)
    written, graphs = time.perf_counter(), compiled_graphs()
    warmup_s = warm_up(engine)
    sync()
    slots = sum(p.numel() * p.element_size() for n, p in transformer.named_parameters() if SLOT_PREFIX in n)
    res[f"{label}:build"] = {
        "from_config_s": round(built - start, 2),
        "warmup_s": round(time.perf_counter() - written, 2),
        "warmup_detail_s": {key: round(value, 3) for key, value in warmup_s.items()},
        "graphs_compiled_in_warmup": compiled_graphs() - graphs,  # > 0 with compile: the counter counts
        "vram_before_gib": gib(before),
        "slots_gib": gib(slots),
        "vram_allocated_gib": gib(torch.cuda.memory_allocated()) if cuda_ok() else 0.0,
        "peak_vram_gib": peak_vram_gib(),
    }
    graphs = compiled_graphs()
    images = {"none": engine.generate(request(args, None)).images[0]}  # before any adapter was read

    allocated = torch.cuda.memory_allocated() if cuda_ok() else 0
    first_load = {}
    for name in ADAPTERS:
        read_before = engine.adapters.stats.load_s
        first_load[name] = {
            "rank": ranks[name],
            "file_mib": round(sum(f.stat().st_size for f in folders[name].iterdir()) / 2**20, 1),
            "ms": round(switched_ms(engine, name), 1),
            "read_ms": round((engine.adapters.stats.load_s - read_before) * 1e3, 1),
        }
    resident = (torch.cuda.memory_allocated() - allocated) if cuda_ok() else 0
    res[f"{label}:first_load"] = {**first_load, "resident_gib": gib(resident)}

    timer = StepTimer(transformer)
    steps = {}
    for adapter in (None, "b"):
        series = timed_series(engine.generate, lambda i, a=adapter: request(args, a, i), args.n, timer)
        steps[adapter or "none"] = series
        res[f"{label}:steps"] = steps
    timer.remove()

    switches: dict[str, list[float]] = {}
    switched_ms(engine, "a")
    for _ in range(args.rounds):
        for switch, adapter in SWITCHES:
            switches.setdefault(switch, []).append(switched_ms(engine, adapter))
    res[f"{label}:switches"] = {switch: round(statistics.median(ms), 3) for switch, ms in switches.items()} | {
        "unit": f"ms, median of {args.rounds} (a->none, b->a: of {2 * args.rounds})"
    }

    sweep = sweep_images(engine, args)
    res[f"{label}:scale_sweep"] = {"adapter": "b", "rel_l2_to_base": distances(sweep, images["none"])}
    images |= sweep
    images["b"] = engine.generate(request(args, "b")).images[0]
    engine.generate(request(args, "a"))  # each stack's graph has run after the switches
    res[f"{label}:recompiles"] = {
        "graphs_compiled_after_warmup": compiled_graphs() - graphs,
        "unwarmed_compiles": engine.unwarmed_compiles,
        "none_after_adapters_is_base_bytes": bool(
            np.array_equal(engine.generate(request(args, None)).images[0], images["none"])
        ),
        "adapter_stats": dataclasses.asdict(engine.adapters.stats),
    }
    return images


def deviation_of(images: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """How far fp8 moves the images with adapter b and without, beside how far b itself moves them."""
    import torch

    bf16, fp8 = images["bf16"], images["fp8"]
    delta = {
        label: torch.from_numpy(run["b"].astype(np.float32) - run["none"].astype(np.float32))
        for label, run in images.items()
    }
    return {
        "fp8+b vs bf16+b": deviation(fp8["b"], bf16["b"]),
        "fp8 vs bf16, no adapter": deviation(fp8["none"], bf16["none"]),
        "bf16+b vs bf16 (what b changes)": deviation(bf16["b"], bf16["none"]),
        "b's change, fp8 vs bf16": compare(delta["fp8"], delta["bf16"]),
    }


def reference_images(args: argparse.Namespace, config: ModelConfig, folder: Path) -> dict[str, np.ndarray]:
    """The sweep through diffusers' own LoRA: an eager engine without adapters (no slots: its pipeline is plain
    diffusers, its call and seeds the engines'), ``b`` read by ``load_lora_weights``, each scale set by
    ``set_adapters``; keyed as the engines' images."""
    from deployments.engine import Flux2Engine

    engine = Flux2Engine.from_config(config)
    images = {"none": engine.generate(request(args, None)).images[0]}
    engine.pipeline.load_lora_weights(str(folder), adapter_name="b")
    for scale in SCALES:
        engine.pipeline.set_adapters(["b"], adapter_weights=[scale])
        images[AdapterStack((("b", scale),)).id] = engine.generate(request(args, None)).images[0]
    return images


def reference_sweep(reference: dict[str, np.ndarray], engines: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """The reference's own distances to its base image, and each engine's images against the reference's."""
    figures: dict[str, Any] = {"rel_l2_to_base": distances(reference, reference["none"])}
    for label, images in engines.items():
        figures[f"{label} engine vs reference"] = {key: rel_l2(images[key], image) for key, image in reference.items()}
    return figures


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    import diffusers
    import peft
    import torch

    res, deadline = Results(args.json), Deadline(args.budget)
    res["env"] = {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "peft": peft.__version__,
        "gpu": torch.cuda.get_device_name() if cuda_ok() else "none",
        "argv": sys.argv,
    }
    images: dict[str, dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory(prefix="flux2-adapters-") as folder:
        folders = {name: Path(folder) / name for name in ADAPTERS}
        lora = AdapterSettings(
            adapters=[AdapterSpec(name=name, source=str(path)) for name, path in folders.items()],
            max_rank=max(args.rank),
            max_loaded=len(ADAPTERS),
        )
        shape = Shape(width=args.size, height=args.size, references=0)
        res["settings"] = {
            "source": args.source,
            "size": args.size,
            "steps": args.steps,
            "ranks": dict(zip(ADAPTERS, args.rank, strict=True)),
            "lora": lora.model_dump(exclude={"adapters"}),
            "option": args.option,
            "adapters_cover": "every linear layer of the transformer",
        }
        for label, quantization in [("bf16", "none"), *([("fp8", "fp8")] if args.quantization else [])]:
            if not deadline.allows(args.engine_s):
                res[f"skipped:{label}"] = f"not enough time left ({deadline.left():.0f}s < {args.engine_s:.0f}s)"
                continue
            log(f"== {label} ({deadline.left():.0f}s left)")
            overrides = {"warmup_shapes": (shape,), **UNCACHED, **parse_overrides(args.option)}
            overrides["quantization"] = quantization
            config = ModelConfig(source=args.source, lora=lora, **overrides)
            try:
                images[label] = measure_engine(args, res, label, config, folders)
            except Exception as exc:  # one engine failing must not lose the other's figures
                traceback.print_exc()
                res[f"error:{label}"] = repr(exc)[:1000]
            torch._dynamo.reset()  # the next engine compiles its own graphs; this one's go with its weights
            free_cuda()
        if not folders["b"].exists():
            res["skipped:reference"] = "no engine wrote adapter b"
        elif not deadline.allows(REFERENCE_S):
            res["skipped:reference"] = f"not enough time left ({deadline.left():.0f}s < {REFERENCE_S:.0f}s)"
        else:
            log(f"== reference: diffusers' LoRA, eager ({deadline.left():.0f}s left)")
            overrides = {**parse_overrides(args.option), "compile": "none", "quantization": "none", "preset": "none"}
            try:
                reference = reference_images(args, ModelConfig(source=args.source, **overrides), folders["b"])
                res["reference:scale_sweep"] = reference_sweep(reference, images)
            except Exception as exc:  # the engines' figures are written already
                traceback.print_exc()
                res["error:reference"] = repr(exc)[:1000]
            free_cuda()
    if len(images) == 2:
        res["deviation"] = deviation_of(images)
    res["elapsed_s"] = round(args.budget - deadline.left(), 1)
    log("done")
