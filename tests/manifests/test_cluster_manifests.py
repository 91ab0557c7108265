"""The cluster manifests cannot rot: validate them offline against Ray's own schemas and our config.

- Serve configs (``serve_config.yaml``, ``cluster/serve-config-gpu.yaml`` and the RayService's
  ``serveConfigV2``) against ``ray.serve.schema.ServeDeploySchema``, with unknown keys rejected
  (Serve's schemas silently ignore them), their ``args`` against ``deployments.config.ServiceConfig``,
  and their deployment names against what ``deployments.app`` creates.
- ``cluster/rayservice.yaml`` (KubeRay ``RayService``) for its keys and its fit with the Serve config:
  GPU worker group sized to Serve's replicas, one GPU per pod, caches on persistent volumes, secrets.
- ``cluster/ray-cluster-aws.yaml`` against Ray's ``ray-schema.json`` (what ``ray up`` checks before it
  calls AWS) and its fit with the Serve config.

No Ray cluster is started. The ``*_rejects_*`` tests mutate a copy of each manifest to prove the
checks catch a misspelt or wrong key.
"""

from __future__ import annotations

import copy
import json
import re
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from pydantic import BaseModel, ValidationError
from ray import serve
from ray.serve.schema import ServeDeploySchema

from deployments.app import build_app
from deployments.config import LIVE_MODEL_KEYS, LIVE_SERVICE_KEYS, RANDOM_SOURCES, TINY_SOURCES, ServiceConfig
from deployments.server import Flux2Model

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
ROOT_SERVE_CONFIG = REPO / "serve_config.yaml"
GPU_SERVE_CONFIG = CLUSTER / "serve-config-gpu.yaml"
RAYSERVICE = CLUSTER / "rayservice.yaml"
LAUNCHER = CLUSTER / "ray-cluster-aws.yaml"
DOCKERFILE = CLUSTER / "Dockerfile"
INGRESS = "ImagesIngress"
IMPORT_PATH = "deployments.app:build_app"
GPU = "nvidia.com/gpu"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rayservice_docs() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(RAYSERVICE.read_text()) if doc]


def the_rayservice(docs: list[dict[str, Any]]) -> dict[str, Any]:
    services = [doc for doc in docs if doc.get("kind") == "RayService"]
    assert len(services) == 1, "rayservice.yaml must hold exactly one RayService"
    return services[0]


# --------------------------------------------------------------------------- strict key checks


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Pydantic models an annotation may hold, through Optional/Union/List (not through Dict)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (dict, typing.Dict):  # noqa: UP006
        return []
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def unknown_keys(model: type[BaseModel], data: Any, where: str = "") -> list[str]:
    """Keys in ``data`` that ``model`` (and the models nested in it) does not define.

    Ray's Serve schemas accept and drop unknown keys (``max_replica: 8`` would be ignored), so a
    typo would only show up as a service that does not scale. This walks the raw dict instead.
    """
    if not isinstance(data, dict):
        return []
    fields = {}
    for name, field in model.model_fields.items():
        fields[name] = field
        if field.alias:
            fields[field.alias] = field
    problems = []
    for key, value in data.items():
        if key not in fields:
            problems.append(f"{where}{key}")
            continue
        nested = _models_in(fields[key].annotation)
        if len(nested) != 1:
            continue
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            label = f"{where}{key}[{i}]." if isinstance(value, list) else f"{where}{key}."
            problems += unknown_keys(nested[0], item, label)
    return problems


# KubeRay v1 fields (ray-operator/apis/ray/v1/*_types.go, KubeRay 1.0-1.5) and the Kubernetes pod
# fields these manifests may use. A key outside these lists is a typo the API server would prune
# silently (`maxReplica: 4` would leave the group at its default of 2147483647).
RAYSERVICE_SPEC_KEYS = {
    "serveConfigV2",
    "rayClusterConfig",
    "upgradeStrategy",
    "serveService",
    "excludeHeadPodFromServeSvc",
    "rayClusterDeletionDelaySeconds",
    "serviceUnhealthySecondThreshold",
    "deploymentUnhealthySecondThreshold",
}
RAYCLUSTER_SPEC_KEYS = {
    "suspend",
    "managedBy",
    "autoscalerOptions",
    "headServiceAnnotations",
    "enableInTreeAutoscaling",
    "gcsFaultToleranceOptions",
    "headGroupSpec",
    "rayVersion",
    "workerGroupSpecs",
    "authOptions",
    "upgradeStrategy",
}
HEAD_GROUP_KEYS = {"template", "headService", "enableIngress", "rayStartParams", "serviceType", "resources", "labels"}
WORKER_GROUP_KEYS = {
    "suspend",
    "groupName",
    "replicas",
    "minReplicas",
    "maxReplicas",
    "idleTimeoutSeconds",
    "rayStartParams",
    "template",
    "scaleStrategy",
    "numOfHosts",
    "resources",
    "labels",
}
AUTOSCALER_OPTIONS_KEYS = {
    "resources",
    "image",
    "imagePullPolicy",
    "securityContext",
    "idleTimeoutSeconds",
    "upscalingMode",
    "env",
    "envFrom",
    "volumeMounts",
    "version",
}
POD_SPEC_KEYS = {
    "volumes",
    "initContainers",
    "containers",
    "restartPolicy",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "dnsPolicy",
    "dnsConfig",
    "nodeSelector",
    "serviceAccountName",
    "automountServiceAccountToken",
    "hostNetwork",
    "hostIPC",
    "hostPID",
    "shareProcessNamespace",
    "securityContext",
    "imagePullSecrets",
    "affinity",
    "schedulerName",
    "tolerations",
    "priorityClassName",
    "priority",
    "runtimeClassName",
    "enableServiceLinks",
    "topologySpreadConstraints",
    "resourceClaims",
}
CONTAINER_KEYS = {
    "name",
    "image",
    "command",
    "args",
    "workingDir",
    "ports",
    "envFrom",
    "env",
    "resources",
    "volumeMounts",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "imagePullPolicy",
    "securityContext",
}


def _check_keys(data: dict[str, Any], allowed: set[str], where: str) -> list[str]:
    return [f"{where}.{key}" for key in data if key not in allowed]


def _pod_unknown_keys(template: dict[str, Any], where: str) -> list[str]:
    problems = _check_keys(template, {"metadata", "spec"}, where)
    spec = template.get("spec", {})
    problems += _check_keys(spec, POD_SPEC_KEYS, f"{where}.spec")
    for i, container in enumerate(spec.get("containers", [])):
        problems += _check_keys(container, CONTAINER_KEYS, f"{where}.spec.containers[{i}]")
        problems += _check_keys(container.get("resources", {}), {"requests", "limits"}, f"{where}.containers[{i}]")
    return problems


def rayservice_unknown_keys(service: dict[str, Any]) -> list[str]:
    problems = _check_keys(service, {"apiVersion", "kind", "metadata", "spec"}, "RayService")
    spec = service["spec"]
    problems += _check_keys(spec, RAYSERVICE_SPEC_KEYS, "spec")
    cluster = spec["rayClusterConfig"]
    problems += _check_keys(cluster, RAYCLUSTER_SPEC_KEYS, "rayClusterConfig")
    problems += _check_keys(cluster.get("autoscalerOptions", {}), AUTOSCALER_OPTIONS_KEYS, "autoscalerOptions")
    head = cluster["headGroupSpec"]
    problems += _check_keys(head, HEAD_GROUP_KEYS, "headGroupSpec")
    problems += _pod_unknown_keys(head["template"], "headGroupSpec.template")
    for group in cluster.get("workerGroupSpecs", []):
        where = f"workerGroupSpecs[{group.get('groupName')}]"
        problems += _check_keys(group, WORKER_GROUP_KEYS, where)
        problems += _pod_unknown_keys(group["template"], f"{where}.template")
    return problems


# --------------------------------------------------------------------------- Serve configs


def check_serve_config(raw: dict[str, Any]) -> ServeDeploySchema:
    """ServeDeploySchema (strict), ServiceConfig for the args, deployment names from deployments.app."""
    problems = unknown_keys(ServeDeploySchema, raw)
    assert not problems, f"unknown keys in the Serve config: {problems}"
    schema = ServeDeploySchema.model_validate(raw)
    for app in schema.applications:
        assert app.import_path == IMPORT_PATH, app.import_path
        config = ServiceConfig.model_validate(app.args)
        expected = {INGRESS} | {model.deployment_name for model in config.models}
        configured = {dep.name for dep in app.deployments}
        assert configured <= expected, f"Serve would reject overrides for deployments {configured - expected}"
        models = {model.deployment_name: model for model in config.models}
        for dep in app.deployments:  # what reconfigure applies: live keys only, valid as the args' are
            user_config = dep.model_dump(exclude_unset=True).get("user_config")
            if user_config is not None and dep.name == INGRESS:
                config.reconfigured(user_config, LIVE_SERVICE_KEYS)
            elif user_config is not None:
                models[dep.name].reconfigured(user_config, LIVE_MODEL_KEYS)
        assert isinstance(build_app(app.args), serve.Application)
    return schema


def gpu_serve_config(raw: dict[str, Any]) -> dict[str, Any]:
    """The production policy of a GPU cluster's Serve config; returns per-app figures for the manifests."""
    schema = check_serve_config(raw)
    assert schema.proxy_location.value != "Disabled"
    assert len(schema.applications) == 1
    app = schema.applications[0]
    config = ServiceConfig.model_validate(app.args)
    overrides = {dep.name: dep.model_dump(exclude_unset=True) for dep in app.deployments}
    longest = config.limits.request_timeout_s
    assert schema.http_options.request_timeout_s > longest, "the proxy would cut requests the ingress still serves"

    figures: dict[str, Any] = {"min_replicas": 0, "max_replicas": 0, "ingress_slots_needed": 0, "resources": []}
    for model in config.models:
        name = model.deployment_name
        assert model.source != "auto", f"{name}: `auto` picks GPU or tiny at build time; name the model"
        assert model.source not in TINY_SOURCES + RANDOM_SOURCES, f"{name}: a demo model on a GPU cluster"
        assert model.compile_cache_dir, f"{name}: compile_cache_dir must point at the persistent volume"
        assert name in overrides, f"{name}: the cluster config must set its scaling explicitly"
        dep = overrides[name]
        # A config's ray_actor_options replace the code's whole dict (Serve does not merge them).
        actor = dep.get("ray_actor_options") or Flux2Model.deployment_options(model)["ray_actor_options"]
        assert actor.get("num_gpus") == 1, f"{name}: each GPU replica must ask for exactly one GPU"
        auto = dep.get("autoscaling_config")
        assert auto, f"{name}: the model deployment must autoscale"
        assert "num_replicas" not in dep or dep["num_replicas"] == "auto"
        assert auto["min_replicas"] >= 1, f"{name}: a cold GPU replica takes minutes; keep one warm"
        assert auto["max_replicas"] >= auto["min_replicas"]
        assert auto["target_ongoing_requests"] == 1, f"{name}: one request per GPU replica"
        assert dep.get("graceful_shutdown_timeout_s", 0) > longest, f"{name}: draining must outlast a generation"
        assert dep.get("max_queued_requests", -1) > 0, f"{name}: the queue must be bounded"
        figures["min_replicas"] += auto["min_replicas"]
        figures["max_replicas"] += auto["max_replicas"]
        figures["ingress_slots_needed"] += (
            auto["max_replicas"] * dep["max_ongoing_requests"] + dep["max_queued_requests"]
        )
        figures["resources"].append((name, actor))
        figures.setdefault("cache_dirs", []).append(model.compile_cache_dir)

    ingress = overrides.get(INGRESS, {})
    slots = ingress.get("max_ongoing_requests", 0)
    assert slots >= figures["ingress_slots_needed"], (
        f"ImagesIngress max_ongoing_requests={slots} caps what the model deployments can hold "
        f"({figures['ingress_slots_needed']} running + queued)"
    )
    assert ingress.get("graceful_shutdown_timeout_s", 0) > longest, "the ingress awaits whole generations"
    ingress_actor = ingress.get("ray_actor_options", {})
    figures["ingress_resources"] = {
        key: amount * ingress.get("num_replicas", 1) for key, amount in ingress_actor.get("resources", {}).items()
    }
    # The env var the ingress reads its API keys from (deployments.config.AuthConfig, when present).
    auth = getattr(config, "auth", None)
    figures["api_keys_env"] = getattr(auth, "api_keys_env", None) or "FLUX2_API_KEYS"
    figures["graceful_s"] = max(dep.get("graceful_shutdown_timeout_s", 0) for dep in overrides.values())
    return figures


@pytest.mark.parametrize("path", [ROOT_SERVE_CONFIG, GPU_SERVE_CONFIG], ids=lambda p: p.name)
def test_serve_config_files_validate(path: Path) -> None:
    check_serve_config(load_yaml(path))


def test_gpu_serve_config_policy() -> None:
    figures = gpu_serve_config(load_yaml(GPU_SERVE_CONFIG))
    assert figures["max_replicas"] >= 1


def test_serve_config_rejects_misspelt_keys() -> None:
    good = load_yaml(GPU_SERVE_CONFIG)
    check_serve_config(good)

    def mutated(edit) -> dict[str, Any]:
        raw = copy.deepcopy(good)
        edit(raw["applications"][0])
        return raw

    model_dep = lambda app: next(d for d in app["deployments"] if d["name"].startswith("Flux2Model-"))  # noqa: E731
    edits = {
        "deployment key": lambda app: model_dep(app).update(max_ongoing_request=model_dep(app)["max_ongoing_requests"]),
        "autoscaling key": lambda app: model_dep(app)["autoscaling_config"].update(max_replica=8),
        "actor option": lambda app: model_dep(app)["ray_actor_options"].update(num_gpu=1),
        "model arg": lambda app: app["args"]["models"][0].update(compile_cache=None),
        "limits arg": lambda app: app["args"]["limits"].update(max_refs=2),
        "deployment name": lambda app: model_dep(app).update(name="Flux2Model-typo"),
        "user_config key": lambda app: model_dep(app).update(user_config={"max_batchsize": 2}),
        "user_config key that needs a new model": lambda app: model_dep(app).update(user_config={"dtype": "float16"}),
        "ingress user_config key": lambda app: app["deployments"][0].update(user_config={"limits": {"max_refs": 2}}),
    }
    for what, edit in edits.items():
        with pytest.raises((AssertionError, ValueError)):
            check_serve_config(mutated(edit))
            pytest.fail(f"a misspelt {what} passed")  # pragma: no cover


# --------------------------------------------------------------------------- KubeRay RayService


def _parse_ray_start_resources(value: str | None) -> dict[str, float]:
    """rayStartParams.resources is written '"{\\"name\\": n}"' (quoted for the shell) by KubeRay's convention."""
    if not value:
        return {}
    return json.loads(value.strip().strip("'").strip('"').replace('\\"', '"'))


def _gpus(container: dict[str, Any]) -> int:
    limits = container.get("resources", {}).get("limits", {})
    return int(limits.get(GPU, 0))


def _under(path: str, mounts: list[str]) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


def check_rayservice(docs: list[dict[str, Any]]) -> None:
    service = the_rayservice(docs)
    assert service["apiVersion"] == "ray.io/v1"
    problems = rayservice_unknown_keys(service)
    assert not problems, f"unknown keys in the RayService: {problems}"
    spec = service["spec"]
    assert isinstance(spec["serveConfigV2"], str), "serveConfigV2 is a YAML string"
    serve_raw = yaml.safe_load(spec["serveConfigV2"])
    assert serve_raw == load_yaml(GPU_SERVE_CONFIG), "serveConfigV2 drifted from cluster/serve-config-gpu.yaml"
    figures = gpu_serve_config(serve_raw)
    # KubeRay's readiness probe of a RayService worker pod asks that pod's Serve proxy.
    assert serve_raw.get("proxy_location", "EveryNode") == "EveryNode", "worker pods would never be ready"

    cluster = spec["rayClusterConfig"]
    assert cluster.get("enableInTreeAutoscaling") is True, "Serve's pending replicas must add GPU pods"
    assert cluster["rayVersion"] == _dockerfile_ray_version(), "rayVersion must match the image's Ray"
    claims = {doc["metadata"]["name"]: doc for doc in docs if doc.get("kind") == "PersistentVolumeClaim"}

    head = cluster["headGroupSpec"]
    head_containers = head["template"]["spec"]["containers"]
    assert all(_gpus(c) == 0 for c in head_containers), "the head has no GPU"
    assert head["rayStartParams"].get("num-gpus", "0") == "0"
    head_resources = _parse_ray_start_resources(head["rayStartParams"].get("resources"))
    for key, needed in figures["ingress_resources"].items():
        assert head_resources.get(key, 0) >= needed, f"the head must advertise {needed} {key} for the ingress"
    head_env = {e["name"]: e for c in head_containers for e in c.get("env", [])}
    keys_env = head_env.get(figures["api_keys_env"], {})
    assert "secretKeyRef" in keys_env.get("valueFrom", {}), f"the head needs {figures['api_keys_env']} from a Secret"

    groups = cluster["workerGroupSpecs"]
    gpu_groups = [g for g in groups if any(_gpus(c) for c in g["template"]["spec"]["containers"])]
    assert gpu_groups, "no worker group asks for nvidia.com/gpu"
    capacity = 0
    for group in groups:
        own = _parse_ray_start_resources(group["rayStartParams"].get("resources"))
        assert not set(own) & set(figures["ingress_resources"]), "only the head may host the ingress"
    for group in gpu_groups:
        name = group["groupName"]
        assert 0 <= group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
        pod = group["template"]["spec"]
        assert pod.get("terminationGracePeriodSeconds", 30) > figures["graceful_s"], (
            f"{name}: Kubernetes would kill a draining replica before Serve's graceful shutdown ends"
        )
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            resources = container["resources"]
            assert int(resources["limits"][GPU]) == 1, f"{name}: one GPU per pod, one replica per pod"
            assert int(resources.get("requests", {}).get(GPU, 1)) == 1
            cpus = float(str(resources["limits"]["cpu"]))
            for dep, actor in figures["resources"]:
                assert actor.get("num_cpus", 1) <= cpus, f"{dep} asks for more CPUs than a {name} pod has"
            mounts = {}
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{name}: volumeMount {mount['name']} has no volume"
                mounts[mount["mountPath"]] = volumes[mount["name"]]
            pvc_mounts = [path for path, vol in mounts.items() if "persistentVolumeClaim" in vol]
            for vol in mounts.values():
                if "persistentVolumeClaim" in vol:
                    claim = claims.get(vol["persistentVolumeClaim"]["claimName"])
                    assert claim, f"{name}: PVC {vol['persistentVolumeClaim']['claimName']} is not in the file"
                    if group["maxReplicas"] > 1:
                        assert "ReadWriteMany" in claim["spec"]["accessModes"], "pods share the caches"
            env = {e["name"]: e for e in container.get("env", [])}
            assert _under(env["HF_HOME"]["value"], pvc_mounts), f"{name}: HF_HOME is not on a persistent volume"
            for cache in figures["cache_dirs"]:
                assert _under(cache, pvc_mounts), f"{name}: compile_cache_dir {cache} is not on a persistent volume"
            assert "secretKeyRef" in env["HF_TOKEN"].get("valueFrom", {}), "the HF token comes from a Secret"
        capacity += group["maxReplicas"]
        assert group["minReplicas"] <= figures["min_replicas"], f"{name}: GPU pods Serve would leave idle"
    assert capacity >= figures["max_replicas"], (
        f"GPU worker groups allow {capacity} pods but Serve may want {figures['max_replicas']} GPU replicas"
    )
    for container in [c for g in groups for c in g["template"]["spec"]["containers"]] + head_containers:
        for env in container.get("env", []):
            if re.search(r"TOKEN|KEY|SECRET|PASSWORD", env["name"]):
                assert "value" not in env, f"{env['name']} must come from a Secret, not inline"


def _dockerfile_ray_version() -> str:
    match = re.search(r"^FROM rayproject/ray:(\d+\.\d+\.\d+)", DOCKERFILE.read_text(), re.M)
    assert match, "cluster/Dockerfile must build FROM rayproject/ray:<version>"
    return match.group(1)


def test_rayservice() -> None:
    check_rayservice(rayservice_docs())


def test_rayservice_rejects_rot() -> None:
    good = rayservice_docs()

    def cluster_of(docs):
        return the_rayservice(docs)["spec"]["rayClusterConfig"]

    def gpu_group(docs):
        return cluster_of(docs)["workerGroupSpecs"][0]

    def serve_edit(docs, edit):
        spec = the_rayservice(docs)["spec"]
        raw = yaml.safe_load(spec["serveConfigV2"])
        edit(raw)
        spec["serveConfigV2"] = yaml.safe_dump(raw)

    edits = {
        "misspelt maxReplicas": lambda d: gpu_group(d).update(maxReplica=gpu_group(d).pop("maxReplicas")),
        "worker group too small": lambda d: gpu_group(d).update(maxReplicas=1),
        "no in-tree autoscaling": lambda d: cluster_of(d).pop("enableInTreeAutoscaling"),
        "two GPUs per pod": lambda d: gpu_group(d)["template"]["spec"]["containers"][0]["resources"]["limits"].update(
            {GPU: 2}
        ),
        "inline HF token": lambda d: gpu_group(d)["template"]["spec"]["containers"][0]["env"].append(
            {"name": "HF_TOKEN", "value": "hf_x"}
        ),
        "serveConfigV2 drift": lambda d: serve_edit(
            d, lambda raw: raw["applications"][0]["deployments"][1]["autoscaling_config"].update(max_replicas=9)
        ),
        "misspelt container key": lambda d: gpu_group(d)["template"]["spec"]["containers"][0].update(volumeMount=[]),
    }
    for what, edit in edits.items():
        docs = copy.deepcopy(good)
        edit(docs)
        with pytest.raises((AssertionError, ValidationError, KeyError)):
            check_rayservice(docs)
            pytest.fail(f"{what} passed")  # pragma: no cover


# --------------------------------------------------------------------------- ray up launcher


def ray_schema() -> dict[str, Any]:
    path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    return json.loads(path.read_text())


def check_launcher(config: dict[str, Any]) -> None:
    jsonschema.validate(config, ray_schema())
    # What `ray up` does before it talks to AWS: merge the provider defaults, validate again.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))

    figures = gpu_serve_config(load_yaml(GPU_SERVE_CONFIG))
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head has no GPU"
    for key, needed in figures["ingress_resources"].items():
        assert head["resources"].get(key, 0) >= needed, f"the head must advertise {needed} {key} for the ingress"
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    gpu_types = {name: t for name, t in workers.items() if t["resources"].get("GPU", 0) > 0}
    assert gpu_types, "no GPU worker type"
    for name, node_type in gpu_types.items():
        assert node_type["resources"]["GPU"] == 1, f"{name}: one GPU per node, one replica per node"
        assert node_type["max_workers"] >= figures["max_replicas"], f"{name}: fewer nodes than Serve's max_replicas"
        assert node_type.get("min_workers", 0) <= figures["min_replicas"], f"{name}: GPU nodes Serve would leave idle"
        assert not set(node_type["resources"]) & set(figures["ingress_resources"]), "only the head hosts the ingress"
        for dep, actor in figures["resources"]:
            assert actor.get("num_cpus", 1) <= node_type["resources"]["CPU"], f"{dep} does not fit a {name} node"
    assert config["max_workers"] >= sum(t["max_workers"] for t in workers.values()), "max_workers caps the types"
    image = config.get("docker", {}).get("image", "")
    assert image.endswith(f":{_dockerfile_ray_version()}-py311-gpu") or image.startswith("ghcr.io/flux2-serve/")
    assert any("pip install" in cmd and "flux2-serve" in cmd for cmd in config["setup_commands"])
    head_start = config["head_start_ray_commands"]
    assert any("ray start --head" in cmd and "ray_bootstrap_config.yaml" in cmd for cmd in head_start)
    assert any("--address=$RAY_HEAD_IP:6379" in cmd for cmd in config["worker_start_ray_commands"])
    assert any(figures["api_keys_env"] in cmd for cmd in head_start), "the ingress (head) needs its API keys"
    for remote, local in config.get("file_mounts", {}).items():
        if "secrets" not in remote:
            assert (REPO / local).exists(), f"file_mounts {remote}: {local} does not exist"


def test_launcher() -> None:
    check_launcher(load_yaml(LAUNCHER))


def test_launcher_rejects_rot() -> None:
    good = load_yaml(LAUNCHER)

    def gpu_type(config):
        return next(t for t in config["available_node_types"].values() if t["resources"].get("GPU"))

    edits = {
        "misspelt top-level key": lambda c: c.update(max_worker=c.pop("max_workers")),
        "misspelt node type key": lambda c: gpu_type(c).update(min_worker=gpu_type(c).pop("min_workers")),
        "fractional resource": lambda c: gpu_type(c)["resources"].update(GPU=0.5),
        "too few GPU nodes": lambda c: gpu_type(c).update(max_workers=1),
        "cluster cap below the GPU type": lambda c: c.update(max_workers=1),
        "missing head type": lambda c: c.update(head_node_type="nope"),
    }
    for what, edit in edits.items():
        config = copy.deepcopy(good)
        edit(config)
        with pytest.raises((AssertionError, jsonschema.ValidationError, ValueError, KeyError)):
            check_launcher(config)
            pytest.fail(f"{what} passed")  # pragma: no cover
