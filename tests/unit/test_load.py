"""Model sources: local folders saved with save_pretrained, and clear errors for everything else."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest

from deployments.config import ModelConfig
from deployments.engine import Flux2Engine, ModelLoadError
from deployments.engine.load import load_pipeline
from deployments.engine.synthetic.tiny import build_tiny_dev, build_tiny_klein
from deployments.types import ImageRequest


@pytest.fixture(scope="module", params=["dev", "klein"])
def saved_folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp(f"flux2-{request.param}")
    (build_tiny_dev if request.param == "dev" else build_tiny_klein)().save_pretrained(folder)
    return request.param, folder


def test_local_folder_loads_with_the_pipeline_class_from_model_index(saved_folder: tuple[str, Path]) -> None:
    family, folder = saved_folder
    assert list(folder.glob("transformer/*.safetensors")), "weights are saved as safetensors"
    loaded = load_pipeline(ModelConfig(source=str(folder), device="cpu"))
    assert loaded.family == family and loaded.weights == "pretrained"
    assert type(loaded.pipeline).__name__ == json.loads((folder / "model_index.json").read_text())["_class_name"]


def test_local_folder_generates_like_the_model_it_was_saved_from(saved_folder: tuple[str, Path]) -> None:
    family, folder = saved_folder
    image = np.full((64, 64, 3), 90, np.uint8)
    request = ImageRequest(prompt="make it red", width=64, height=64, images=(image,), num_inference_steps=3)
    loaded = Flux2Engine.from_config(ModelConfig(source=str(folder), device="cpu")).generate(request)
    built = Flux2Engine.from_config(ModelConfig(source=f"tiny-{family}")).generate(request)
    assert np.array_equal(loaded.images[0], built.images[0])
    assert loaded.weights == "pretrained"


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_pipeline(ModelConfig(source=str(tmp_path / "nope"), device="cpu"))


def test_folder_without_model_index_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"model_index\.json"):
        load_pipeline(ModelConfig(source=str(tmp_path), device="cpu"))


def test_non_flux2_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ModelLoadError, match=r"not a FLUX\.2 pipeline"):
        load_pipeline(ModelConfig(source=str(tmp_path), device="cpu"))


def test_unreachable_hub_model_never_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # Offline as huggingface_hub reads HF_HUB_OFFLINE: once, at its import. Setting the variable here changed
    # nothing, and the load spent 23 s in the hub client's retry back-off on a machine without a network.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match=r"black-forest-labs/FLUX\.2-dev"):
        load_pipeline(ModelConfig(source="black-forest-labs/FLUX.2-dev", device="cpu"))


def test_auto_on_cpu_serves_the_labelled_tiny_model() -> None:
    loaded = load_pipeline(ModelConfig(source="auto"))
    assert loaded.source == "tiny-dev" and loaded.weights == "random-tiny"


def test_cuda_requested_without_gpu_fails() -> None:
    with pytest.raises(ModelLoadError, match="no CUDA GPU"):
        load_pipeline(ModelConfig(source="tiny-dev", device="cuda"))
