"""The adapters suite on the tiny model on a CPU: its random PEFT adapters, and every section end to end
(figures meaningless, but for the scale sweep; no fp8 there, which must cost the bf16 figures nothing)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from diffusers import Flux2KleinPipeline
from peft.tuners.lora import LoraLayer

from bench.suites.adapters import EMPTY, SCALES, SWITCHES, write_adapter
from deployments.config import AdapterSettings, AdapterSpec
from deployments.engine.adapters import AdapterManager
from deployments.engine.synthetic.tiny import build_tiny_klein
from deployments.types import AdapterStack


def test_random_adapter_is_a_peft_file_on_every_slot_layer(tmp_path: Path) -> None:
    pipeline = build_tiny_klein()
    spec = AdapterSpec(name="a", source=str(tmp_path / "a"))
    manager = AdapterManager(pipeline, AdapterSettings(adapters=[spec], max_rank=4))
    write_adapter(pipeline.transformer, tmp_path / "a", rank=3, seed=1)
    state_dict, metadata = Flux2KleinPipeline.lora_state_dict(str(tmp_path / "a"), return_lora_metadata=True)
    layers = [module for module in pipeline.transformer.modules() if isinstance(module, LoraLayer)]
    assert len(state_dict) == 2 * len(layers)  # A and B on every linear layer the slots wrap
    assert metadata["transformer.r"] == metadata["transformer.lora_alpha"] == 3
    assert manager.activate(AdapterStack((("a", 1.0),))) > 0 and manager.stats.loads == 1


def test_every_section_runs_and_fp8_fails_alone(bench: Callable, tmp_path: Path) -> None:
    out = tmp_path / "adapters.json"
    bench(
        *("adapters", "--source", "tiny-klein", "--size", "64", "--steps", "2", "--rank", "2,4"),
        *("--n", "1", "--rounds", "1", "--quantization", "fp8", "--json", str(out)),
    )
    result = json.loads(out.read_text())
    assert "fp8" in result["error:fp8"] and "deviation" not in result  # refused before loading anything
    assert not [key for key in result if key.startswith("error:") and key != "error:fp8"], result
    assert result["bf16:build"]["warmup_detail_s"]["64x64+0ref:adapters"] > 0  # the slots' graphs warmed
    first_load = result["bf16:first_load"]
    assert [first_load[name]["rank"] for name in "ab"] == [2, 4]
    assert all(first_load[name]["ms"] >= first_load[name]["read_ms"] > 0 for name in "ab")
    for series in result["bf16:steps"].values():  # without an adapter and with b: one request of two steps
        assert series["e2e_s"]["n"] == 1 and series["transformer_step_ms"]["n"] == 2
    assert set(result["bf16:switches"]) == {label for label, _ in SWITCHES} | {"unit"}
    recompiles = result["bf16:recompiles"]
    assert recompiles["graphs_compiled_after_warmup"] == recompiles["unwarmed_compiles"] == 0
    assert recompiles["none_after_adapters_is_base_bytes"]
    assert recompiles["adapter_stats"]["loads"] == 2 and recompiles["adapter_stats"]["evictions"] == 0
    sweep = result["bf16:scale_sweep"]["rel_l2_to_base"]
    assert sweep.pop(EMPTY) == 0.0  # eager: empty slots give the base bytes
    assert list(sweep) == [f"b:{scale:g}" for scale in SCALES]
    assert all(a < b for a, b in itertools.pairwise(sweep.values())), sweep  # b's effect grows with its scale
    reference = result["reference:scale_sweep"]  # diffusers' load_lora_weights + set_adapters, eager
    assert reference["rel_l2_to_base"] == pytest.approx({"none": 0.0, **sweep}, abs=1e-3)
    assert max(reference["bf16 engine vs reference"].values()) < 1e-3  # a uint8 level here and there at most
