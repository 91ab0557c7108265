"""The configuration reference has one source, the Field descriptions: every key documented, the page current."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from deployments.config import REFERENCE_SECTIONS, ServiceConfig, reference_markdown

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
FIGURE = re.compile(r"\d+(?:\.\d+)?\s?(?:ms|%|\u00d7)|\d+(?:\.\d+)?x (?:faster|slower|larger)|docs/benchmarks")


def nested_models(annotation: object) -> set[type[BaseModel]]:
    """The config models reachable from ``annotation`` through field types (tuples, unions, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {annotation}.union(*(nested_models(field.annotation) for field in annotation.model_fields.values()))
    return set().union(*(nested_models(arg) for arg in typing.get_args(annotation)))


def test_every_config_model_has_a_section() -> None:
    assert nested_models(ServiceConfig) <= {model for _, model in REFERENCE_SECTIONS}


def test_every_key_is_described_without_benchmark_figures() -> None:
    for section, model in REFERENCE_SECTIONS:
        for key, field in model.model_fields.items():
            assert field.description, f"{section}.{key} has no description"
            assert not FIGURE.search(field.description), f"{section}.{key}: figures belong in docs/benchmarks.md"


def test_the_reference_page_is_current() -> None:
    assert PAGE.read_text() == reference_markdown(), "run: python -m deployments.config > docs/configuration.md"
