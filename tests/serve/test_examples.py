"""The README's snippets, as written, from the repository root against a running service.

Every ``bash`` and ``python`` block of README.md and examples/README.md runs, unless ``NOT_RUN`` says why CI
cannot run it: a new block is run or listed, or this module fails. The scripts in examples/ are README blocks
verbatim, and what each writes is checked; every block writes into ``outputs/`` only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.helpers import served_app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DOCUMENTS = (ROOT / "README.md", EXAMPLES / "README.md")
SCRIPTS = sorted(path.name for path in EXAMPLES.iterdir() if path.suffix in (".sh", ".py"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
OUTPUTS = "outputs/"

# A line of a block -> why CI does not run that block. Every other bash and python block runs.
NOT_RUN = {
    "pip install torch==2.13.0 -e . && serve run serve_config.yaml": "installs packages, then serves on port 8000 "
    "until stopped; tests/manifests validates serve_config.yaml and this module serves its model name",
    "bash scripts/test": "the whole lint and test run, this module among it",
    "RAY_AUTH_MODE=token serve deploy serve_config.yaml": "deploys onto a running `serve run` on port 8000; "
    "tests/serve/test_reconfigure.py applies user_config changes as serve deploy does",
}
MAKE_ADAPTER = "random_adapters outputs/adapters"  # in the block that makes the demo adapter
DEMO_ADAPTER = "{name: demo, source: ./outputs/adapters/demo}"  # in the config block that serves it


@dataclass(frozen=True)
class Block:
    """A fenced block of a document; ``where`` is its file and first line, as in ``README.md:42``."""

    where: str
    language: str
    code: str


def blocks() -> list[Block]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(Block(f"{document.relative_to(ROOT)}:{line}", match[1], match[2]))
    return found


def block_with(text: str, languages: tuple[str, ...] = ("bash", "python")) -> Block:
    """The one block of ``languages`` that contains ``text``."""
    (block,) = [block for block in blocks() if block.language in languages and text in block.code]
    return block


RUNNABLE = [
    block
    for block in blocks()
    if block.language in ("bash", "python") and not any(line in block.code for line in NOT_RUN)
]


def served_config(repository: Path) -> dict[str, Any]:
    """The quick start's model name on the tiny model (warmed at 64x64; the blocks' sizes run unwarmed), serving
    the README's demo adapter as configured there, its relative source read from ``repository``."""
    (model,) = yaml.safe_load(block_with(DEMO_ADAPTER, ("yaml",)).code)
    adapters = [{**spec, "source": str(repository / spec["source"])} for spec in model["lora"]["adapters"]]
    return {
        "models": [
            {
                "name": model["name"],
                "source": "tiny-dev",
                "warmup_shapes": [{"width": 64, "height": 64, "references": 1}],
                "lora": {**model["lora"], "adapters": adapters},
            }
        ],
        "ingress_options": {"ray_actor_options": {"num_cpus": 0.1}},
    }


@dataclass(frozen=True)
class Run:
    stdout: str
    written: frozenset[str]  # files the block created or changed, relative to the repository root


class Repository:
    """A repository root as a user has it, in ``path``: examples/ copied (blocks read it and must not write it),
    every other entry linked, no outputs/. Each block runs in it once, with ``FLUX2_URL`` set to ``url``."""

    def __init__(self, path: Path, url: str) -> None:
        self.path, self.url = path, url
        self._runs: dict[Block, Run] = {}

    def run(self, block: Block) -> Run:
        if block not in self._runs:
            command = ["bash", "-c", block.code] if block.language == "bash" else [sys.executable, "-c", block.code]
            before = self._files()
            done = subprocess.run(
                command,
                cwd=self.path,
                env={**os.environ, "FLUX2_URL": self.url},
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, f"{block.where}:\n{done.stdout[-2000:]}{done.stderr[-4000:]}"
            after = self._files()
            self._runs[block] = Run(done.stdout, frozenset(name for name in after if after[name] != before.get(name)))
        return self._runs[block]

    def _files(self) -> dict[str, tuple[int, int]]:
        """(size, mtime) of every file, not through the linked folders."""
        files = {}
        for folder, _, names in os.walk(self.path):
            for name in names:
                stat = (Path(folder) / name).stat()
                files[str((Path(folder) / name).relative_to(self.path))] = (stat.st_size, stat.st_mtime_ns)
        return files


@pytest.fixture(scope="module")
def repository(ray_cluster: dict[str, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repository]:
    path = tmp_path_factory.mktemp("repository")
    for entry in ROOT.iterdir():
        if entry.name == "examples":
            shutil.copytree(entry, path / entry.name)
        elif not entry.name.startswith(".") and entry.name != "outputs":
            (path / entry.name).symlink_to(entry)
    with served_app(served_config(path), "examples", "/examples", ray_cluster["http"]) as url:
        repo = Repository(path, url)
        repo.run(block_with(MAKE_ADAPTER))  # the adapter the config names (read at its first request)
        yield repo


def test_each_listed_block_is_in_the_docs() -> None:
    for line in NOT_RUN:
        block_with(line)


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_readme_shows_each_example_as_written(script: str) -> None:
    block_with((EXAMPLES / script).read_text().strip())


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda block: block.where)
def test_block_runs_and_writes_into_outputs(repository: Repository, block: Block) -> None:
    run = repository.run(block)
    assert all(name.startswith(OUTPUTS) for name in run.written), run.written
    assert "event: error" not in run.stdout  # curl exits 0 on a stream that ends in an error event


def run_script(repository: Repository, script: str) -> Run:
    return repository.run(block_with((EXAMPLES / script).read_text().strip()))


def image(repository: Repository, name: str) -> np.ndarray:
    return np.asarray(Image.open(repository.path / OUTPUTS / name).convert("RGB"))


def test_edit_with_two_references(repository: Repository) -> None:
    assert run_script(repository, "edit.sh").written == {"outputs/edit.png"}
    assert image(repository, "edit.png").shape == (512, 512, 3)


def test_masked_edit_keeps_everything_outside_the_mask(repository: Repository) -> None:
    assert run_script(repository, "masked_edit.sh").written == {"outputs/dog.png"}
    source = np.asarray(Image.open(EXAMPLES / "cat.png").convert("RGB"))
    kept = np.asarray(Image.open(EXAMPLES / "cat_mask.png"))[..., 3] == 255
    edited = image(repository, "dog.png")
    assert edited.shape == source.shape and np.array_equal(edited[kept], source[kept])
    assert not np.array_equal(edited[~kept], source[~kept])


def test_generate_two_images(repository: Repository) -> None:
    assert run_script(repository, "generate.sh").written == {"outputs/fox-0.png", "outputs/fox-1.png"}
    images = [image(repository, f"fox-{i}.png") for i in (0, 1)]
    assert images[0].shape == (384, 512, 3) and not np.array_equal(*images)


def test_openai_client(repository: Repository) -> None:
    run = run_script(repository, "openai_client.py")
    assert run.written == {"outputs/client-edit.png", "outputs/client-fox.png"}
    events = run.stdout.split()
    assert events[-1] == "image_edit.completed" and events.count("image_edit.partial_image") == 2
    assert events.count("image_edit.progress") == 4  # the tiny model's default steps
    assert image(repository, "client-edit.png").shape == image(repository, "client-fox.png").shape == (512, 512, 3)


def test_the_demo_adapter_changes_the_image(repository: Repository) -> None:
    """The README's command makes an adapter the tiny model loads; one seed gives the base image, a changed one and one
    changed more at twice the scale."""
    assert repository.run(block_with(MAKE_ADAPTER)).written == {
        "outputs/adapters/demo/pytorch_lora_weights.safetensors"
    }
    names = ("lora-off", "lora-demo", "lora-demo-x2")
    assert run_script(repository, "lora.py").written == {f"outputs/{name}.png" for name in names}
    off, demo, double = (image(repository, f"{name}.png").astype(int) for name in names)
    assert off.shape == demo.shape == double.shape == (512, 512, 3)
    assert 0 < np.abs(demo - off).mean() < np.abs(double - off).mean()  # twice the scale, a larger change
