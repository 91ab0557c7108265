"""A context-parallel replica served over HTTP: 2 ranks in a STRICT_PACK placement group on fake GPUs give the
image of a 1-GPU replica of the same model (tests/unit/test_parallel.py covers the ranks without Ray)."""

from __future__ import annotations

import httpx
import numpy as np
import ray

from tests.helpers import TINY_DEV, decode_b64_image, served_app

PARALLEL_CONFIG = {
    "models": [
        {
            **TINY_DEV,
            "name": name,
            "deployment_options": {"ray_actor_options": {"num_gpus": 1, "num_cpus": 0.1}},
            **extra,
        }
        for name, extra in (("tiny-cp", {"context_parallel": {"degree": 2, "timeout_s": 60}}), ("tiny-single", {}))
    ],
    "ingress_options": {"ray_actor_options": {"num_cpus": 0.1}},
}


def test_context_parallel_replica_over_http(ray_cluster: dict[str, int]) -> None:
    with served_app(PARALLEL_CONFIG, "parallel", "/parallel", ray_cluster["http"]) as url:
        groups = [g for g in ray.util.placement_group_table().values() if g["state"] == "CREATED"]
        assert any(g["strategy"] == "STRICT_PACK" and len(g["bundles"]) == 2 for g in groups), groups
        assert all(b.get("GPU") == 1 for g in groups if len(g["bundles"]) == 2 for b in g["bundles"].values())

        body = {"prompt": "a red car", "size": "64x64", "seed": 11, "num_inference_steps": 3}
        images = {}
        with httpx.Client(base_url=url, timeout=120) as client:
            for model in ("tiny-cp", "tiny-single"):
                response = client.post("/v1/images/generations", json={**body, "model": model})
                assert response.status_code == 200, response.text
                images[model] = np.asarray(decode_b64_image(response.json()["data"][0]["b64_json"]), dtype=np.int16)
            odd = client.post("/v1/images/generations", json={**body, "size": "80x80", "model": "tiny-cp"})
            assert odd.status_code == 400 and odd.json()["error"]["code"] == "size_not_divisible", odd.text
            again = client.post("/v1/images/generations", json={**body, "model": "tiny-cp"})
            assert again.status_code == 200, again.text  # the group is still in step after the refused size
    assert np.abs(images["tiny-cp"] - images["tiny-single"]).max() <= 1
