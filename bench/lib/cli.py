"""Command-line values the suites share: ModelConfig overrides and shape lists (no torch: ``--help`` stays quick)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def suite_parser(suite: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of ``python -m bench SUITE``: the suite's module docstring, as written, is its help."""
    return argparse.ArgumentParser(
        prog=f"python -m bench {suite}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def parse_overrides(text: str) -> dict[str, Any]:
    """``a=1,b=fp8,c={"x": 1, "y": 2}`` -> ModelConfig overrides: values are JSON where they parse as JSON, else
    strings; commas inside JSON values are kept."""
    overrides: dict[str, Any] = {}
    for part in split_top_level(text):
        key, sep, raw = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected key=value, got {part.strip()!r}")
        try:
            overrides[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key.strip()] = raw.strip()
    return overrides


def split_top_level(text: str) -> list[str]:
    """Split at the commas that are not inside brackets or braces."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [part for part in [*parts, current] if part.strip()]


def parse_shape(text: str) -> tuple[int, int, int]:
    """``WxH+R`` (R reference images, ``+0`` when left out) -> (width, height, references)."""
    size, _, refs = text.strip().partition("+")
    width, sep, height = size.lower().partition("x")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected WxH+R, got {text!r}")
    return int(width), int(height), int(refs or 0)


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    """``1024x1024+0,1024x1024+1`` -> [(1024, 1024, 0), (1024, 1024, 1)]."""
    return [parse_shape(item) for item in text.split(",") if item.strip()]
