"""``python -m bench`` lists its suites, every suite answers ``--help`` on a CPU without loading torch, and the
shared values parse (bench/lib/cli.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from bench.__main__ import available_suites
from bench.lib.cli import parse_overrides, parse_shapes


def test_bench_lists_its_suites(bench: Callable) -> None:
    listing = bench("--help").stdout
    assert all(name in listing for name in available_suites())


@pytest.mark.parametrize("suite", list(available_suites()))
def test_every_suite_answers_help_on_a_cpu_without_torch(bench: Callable, suite: str) -> None:
    """Heavy imports wait until a suite's ``main`` has parsed its arguments: ``--help`` (or a mistyped option)
    answers at once."""
    answered = bench(suite, "--help", timeout=120, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert answered.stdout.startswith(f"usage: python -m bench {suite}")
    imported = {line.rpartition("|")[2].strip() for line in answered.stderr.splitlines()}
    assert "argparse" in imported and "torch" not in imported


def test_overrides_keep_commas_inside_json() -> None:
    assert parse_overrides('compile=none,step_cache=taylorseer,step_cache_options={"a": 1, "b": 2}') == {
        "compile": "none",
        "step_cache": "taylorseer",
        "step_cache_options": {"a": 1, "b": 2},
    }
    with pytest.raises(argparse.ArgumentTypeError, match="key=value"):
        parse_overrides("compile")


def test_shapes_parse_with_and_without_references() -> None:
    assert parse_shapes("1024x1024+1,768x1344") == [(1024, 1024, 1), (768, 1344, 0)]
