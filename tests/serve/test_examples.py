"""The README's examples, as written, against a running service and the sample images in examples/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import served_app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(path.name for path in EXAMPLES.iterdir() if path.suffix in (".sh", ".py"))
# The quick start's model name, the tiny model behind it, and the default limits the README's sizes need.
CONFIG = {
    "models": [
        {"name": "flux2", "source": "tiny-dev", "warmup_shapes": [{"width": 64, "height": 64, "references": 1}]}
    ],
    "ingress_options": {"ray_actor_options": {"num_cpus": 0.1}},
}


@pytest.fixture(scope="module")
def examples_url(ray_cluster: dict[str, int]) -> Iterator[str]:
    with served_app(CONFIG, "examples", "/examples", ray_cluster["http"]) as url:
        yield url


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A copy of the repository's examples/, as a user running from the repository root has it."""
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    return tmp_path


def written(workdir: Path) -> set[str]:
    """The files in the repository root but for examples/: what the scripts wrote, all of it meant for outputs/."""
    files = (path.relative_to(workdir) for path in workdir.rglob("*") if path.is_file())
    return {str(path) for path in files if path.parts[0] != EXAMPLES.name}


def run(script: str, url: str, cwd: Path) -> str:
    command = ["bash" if script.endswith(".sh") else sys.executable, f"examples/{script}"]
    done = subprocess.run(
        command, cwd=cwd, env={**os.environ, "FLUX2_URL": url}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_readme_shows_each_example_as_written(script: str) -> None:
    assert (EXAMPLES / script).read_text().strip() in (ROOT / "README.md").read_text()


def test_edit_with_two_references(examples_url: str, workdir: Path) -> None:
    run("edit.sh", examples_url, workdir)
    assert written(workdir) == {"outputs/edit.png"}
    assert Image.open(workdir / "outputs/edit.png").size == (512, 512)


def test_masked_edit_keeps_everything_outside_the_mask(examples_url: str, workdir: Path) -> None:
    run("masked_edit.sh", examples_url, workdir)
    assert written(workdir) == {"outputs/dog.png"}
    source = np.asarray(Image.open(EXAMPLES / "cat.png").convert("RGB"))
    kept = np.asarray(Image.open(EXAMPLES / "cat_mask.png"))[..., 3] == 255
    edited = np.asarray(Image.open(workdir / "outputs/dog.png").convert("RGB"))
    assert edited.shape == source.shape and np.array_equal(edited[kept], source[kept])
    assert not np.array_equal(edited[~kept], source[~kept])


def test_generate_two_images(examples_url: str, workdir: Path) -> None:
    run("generate.sh", examples_url, workdir)
    assert written(workdir) == {"outputs/fox-0.png", "outputs/fox-1.png"}
    images = [np.asarray(Image.open(workdir / f"outputs/fox-{i}.png")) for i in (0, 1)]
    assert images[0].shape == (384, 512, 3) and not np.array_equal(*images)


def test_openai_client(examples_url: str, workdir: Path) -> None:
    events = run("openai_client.py", examples_url, workdir).split()
    assert written(workdir) == {"outputs/client-edit.png", "outputs/client-fox.png"}
    assert events[-1] == "image_edit.completed" and events.count("image_edit.partial_image") == 2
    assert events.count("image_edit.progress") == 4  # the tiny model's default steps
    for name in ("client-edit.png", "client-fox.png"):
        assert Image.open(workdir / "outputs" / name).size == (512, 512)
