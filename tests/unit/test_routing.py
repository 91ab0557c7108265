"""A request's ``model`` and ``lora`` fields resolved once into a Route: the served model and one canonical
AdapterStack, or an error naming the field (deployments/openai/routing.py)."""

from __future__ import annotations

import pytest

from deployments.config import AdapterSettings, AdapterSpec, ModelConfig
from deployments.errors import InvalidRequest, NotFound
from deployments.openai.protocol import ImageParams
from deployments.openai.routing import model_ids, resolve_adapters, route
from deployments.types import AdapterStack

SETTINGS = AdapterSettings(
    adapters=[
        AdapterSpec(name=name, source=f"/loras/{name}.safetensors", scale=scale)
        for name, scale in (("a", 1.0), ("b", 1.0), ("c", 0.5))
    ],
    max_per_request=2,
    max_scale=2.0,
)
MODELS = {"klein": ModelConfig(name="klein", lora=SETTINGS), "dev": ModelConfig(name="dev")}


def test_unknown_names_and_bad_stacks_are_refused_before_any_work() -> None:
    with pytest.raises(NotFound, match="unknown LoRA adapter 'nope'") as raised:
        resolve_adapters(SETTINGS, [("nope", 1.0)])
    assert (raised.value.param, raised.value.code) == ("lora", "adapter_not_found")
    for requested, code in [
        ([("a", 1.0), ("b", 1.0), ("c", 1.0)], "too_many_adapters"),
        ([("a", 1.0), ("a", 0.5)], "duplicate_adapter"),
        ([("a", 2.5)], "invalid_adapter_scale"),
        ([("a", float("nan"))], "invalid_adapter_scale"),
    ]:
        with pytest.raises(InvalidRequest) as raised:
            resolve_adapters(SETTINGS, requested)
        assert (raised.value.param, raised.value.code) == ("lora", code), requested


def test_a_stack_is_canonical_whatever_the_order_and_defaults() -> None:
    """Default scales filled in, zero scales dropped, sorted by name: equal stacks are equal values with one id."""
    stack = resolve_adapters(SETTINGS, [("c", None), ("a", 0.5)])
    assert stack == resolve_adapters(SETTINGS, [("a", 0.5), ("c", 0.5)]) == AdapterStack((("c", 0.5), ("a", 0.5)))
    assert stack.entries == (("a", 0.5), ("c", 0.5)) and stack.id == "a:0.5+c:0.5"
    assert resolve_adapters(SETTINGS, [("b", 0.0)]) == AdapterStack() and not AdapterStack()
    assert AdapterStack().id == ""
    with pytest.raises(ValueError, match="named twice"):
        AdapterStack((("a", 1.0), ("a", 0.5)))


def test_a_route_names_a_model_and_its_adapters() -> None:
    plain = route(ImageParams(prompt="p"), MODELS, "dev")
    assert plain.model.served_name == "dev" and plain.adapters == AdapterStack()
    by_model = route(ImageParams(prompt="p", model="klein/c", lora=[{"name": "a", "scale": 2.0}]), MODELS, "dev")
    assert by_model.model.served_name == "klein" and by_model.adapters.id == "a:2+c:0.5"
    for name in ("nope", "klein/nope", "dev/a"):
        with pytest.raises(NotFound) as raised:
            route(ImageParams(prompt="p", model=name), MODELS, "dev")
        assert (raised.value.param, raised.value.code) == ("model", "model_not_found"), name
    with pytest.raises(InvalidRequest) as raised:  # the model's adapter counts against max_per_request
        route(ImageParams(prompt="p", model="klein/c", lora=[{"name": "a"}, {"name": "b"}]), MODELS, "dev")
    assert raised.value.code == "too_many_adapters"
    assert model_ids(MODELS) == ["klein", "klein/a", "klein/b", "klein/c", "dev"]
