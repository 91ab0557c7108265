"""The benchmark suites of docs/benchmarks.md: python -m bench SUITE [OPTIONS], one command each.

Every suite answers ``python -m bench SUITE --help`` on any machine; most need a GPU to measure anything.
How the figures in docs/benchmarks.md were made on the lent GPU machine: bench/lab/batch.sh.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# suite -> (its module in bench/suites/, whose ``main(argv)`` runs it; what it measures). A module is imported only
# when its suite runs.
SUITES = {
    "engine": ("engine", "plain diffusers eager vs this engine, one process: steps vs matmul floors, fp8, VRAM"),
    "options": ("options", "speed options end to end against a baseline, split by stage, with their deviation"),
    "step": ("step", "one transformer step per compile variant: kernel split, rates, burst and sustained floors"),
    "attention": ("attention", "attention kernels and backends at FLUX.2's shapes"),
    "vae": ("vae", "the VAE decode alone: eager, one dynamic graph, static graphs beside a general one"),
    "serve": ("serve", "the same requests through Ray Serve over HTTP: serving overhead, split by stage"),
    "ready": ("ready", "replica ready time, cold then warm compile cache, each in a fresh process"),
    "mixed": ("mixed", "mixed back-to-back requests of several sizes: OOMs, GPU idle time, latency per shape"),
    "adapters": ("adapters", "LoRA adapters: first load, switch times, step cost, recompiles, fp8 deviation"),
    "soak": ("soak", "a long mixed run against a running server: lost or wrong answers, 5xx, counters, VRAM"),
    "eval": ("eval.__main__", "edit quality: CLIP score, preservation outside the mask, latency, VRAM"),
    "cp-latency": ("cp_latency", "one request split over N GPUs (context parallel) vs one GPU"),
    "replica-scaling": ("replica_scaling", "images/s with 1..N one-GPU replicas, p95, autoscaling"),
}


def suite_module(name: str) -> str:
    """The import path of suite ``name``'s module."""
    return f"bench.suites.{SUITES[name][0]}"


def available_suites() -> dict[str, tuple[str, str]]:
    """The suites whose module is there (a suite's file may land after its entry here)."""
    return {name: entry for name, entry in SUITES.items() if importlib.util.find_spec(suite_module(name)) is not None}


def build_parser(suites: dict[str, tuple[str, str]]) -> argparse.ArgumentParser:
    listing = "\n".join(f"  {name:<16} {description}" for name, (_, description) in suites.items())
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        usage="%(prog)s [-h] SUITE [OPTIONS ...]",
        description=__doc__,
        epilog=f"suites:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("suite", choices=suites, metavar="SUITE", help="one of the suites below; then its own OPTIONS")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    suites = available_suites()
    suite = build_parser(suites).parse_args(argv[:1]).suite
    importlib.import_module(suite_module(suite)).main(argv[1:])


if __name__ == "__main__":
    main()
