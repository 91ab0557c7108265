"""Random LoRA files for a source (the demo adapter, a soak's adapters): they load into the engine's slots, and the
command line writes one folder per name."""

from __future__ import annotations

from pathlib import Path

from deployments.config import AdapterSettings, AdapterSpec
from deployments.engine.adapters import AdapterManager
from deployments.engine.synthetic.random_adapters import main, write_adapters
from deployments.engine.synthetic.tiny import build_tiny_klein
from deployments.types import AdapterStack


def test_written_adapters_load_into_the_engines_slots(tmp_path: Path) -> None:
    folders = write_adapters("tiny-klein", tmp_path, ["a", "b"], rank=2)
    specs = [AdapterSpec(name=folder.name, source=str(folder)) for folder in folders]
    settings = AdapterSettings(adapters=specs, max_rank=4, max_per_request=2, max_loaded=2)
    manager = AdapterManager(build_tiny_klein(), settings)
    assert manager.activate(AdapterStack((("a", 1.0), ("b", 0.5)))) > 0 and manager.stats.loads == 2


def test_the_command_writes_one_folder_per_name(tmp_path: Path) -> None:
    main([str(tmp_path), "--source", "tiny-klein", "--names", "x,y", "--rank", "2"])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["x", "y"]
    assert all(list((tmp_path / name).glob("*.safetensors")) for name in "xy")
