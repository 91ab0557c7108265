"""A Ray cluster of several nodes on one machine, serving the production Serve config with the tiny model.

Ray's fake multi-node provider (the one behind ``ray.cluster_utils.AutoscalingCluster``) starts a worker node
when the autoscaler asks for one and stops it when the autoscaler removes it; every node is a real raylet
that advertises a fake ``GPU: 1``, so Serve schedules, autoscales and fails over as on a GPU cluster. The
Serve config is ``cluster/serve-config-gpu.yaml`` with the tiny model swapped in and the waits shortened
(``serve_config``). It is deployed the way ``serve run``/``serve deploy`` deploy a config file.
``AutoscalingCluster`` itself is not used: its ``start()`` runs ``ray stop --force``, which stops every Ray on
the machine, and its config needs a defaults file that Ray's wheel leaves out.

Each scenario runs in a process of its own (``python -m tests.cluster.simulation <scenario> <out.json>``,
started by ``ScenarioProcess``), with its own Ray temp dir and ports and 127.0.0.1 as every node's address, so
it never meets another Ray on the machine, the test session's included.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import ray
import yaml
from ray import serve
from ray._private import ray_constants
from ray.cluster_utils import Cluster
from ray.serve._private import api as serve_api
from ray.serve.context import _get_global_client
from ray.serve.schema import ServeDeploySchema

from deployments.engine.parallel import free_port
from tests.helpers import decode_b64_image

REPO = Path(__file__).resolve().parents[2]
GPU_SERVE_CONFIG = REPO / "cluster" / "serve-config-gpu.yaml"
APP = "flux2"
MODEL = "Flux2Model-flux2"
INGRESS = "ImagesIngress"
API_KEY = "sim-key"
# Every node's object store; Ray's default (30% of RAM a node) would reserve most of the machine's memory.
OBJECT_STORE_BYTES = 128 * 1024 * 1024
# One request: cheap enough for two cores, so that the load is many requests rather than a few long ones.
BODY = {"prompt": "a red fox in snow", "size": "128x128"}
CLIENT_TIMEOUT_S = 90.0  # an answer later than this counts as hung
# Shortened like Serve's delays in serve_config: the idle node's proxy drain and the node's idle timeout.
PROXY_DRAIN_S = 5
IDLE_TIMEOUT_S = 6
# A node idle for longer than its drain and idle timeout, and an autoscaler pass or two, is being kept up.
NODE_KEPT_UP_AFTER_S = 3 * (PROXY_DRAIN_S + IDLE_TIMEOUT_S)


def environment(temp_dir: Path) -> dict[str, str]:
    """The scenario process's environment. Ray reads it on import and every node it starts inherits it."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(
        # Own session dirs and address file: no other Ray on this machine finds this cluster, nor it them.
        RAY_TMPDIR=str(temp_dir),
        # The fake multi-node provider refuses to start without it; the autoscaler then runs every second.
        RAY_FAKE_CLUSTER="1",
        AUTOSCALER_UPDATE_INTERVAL_S="1",
        # Every node, those the provider starts included, takes 127.0.0.1 as its address.
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        # Worker-node proxies on a port of their own: clients reach the head's proxy, as on `ray up`.
        RAY_SERVE_WORKER_PROXY_HTTP_PORT=str(free_port()),
        # A proxy whose node lost its last replica drains this long before it stops (Serve's default: 30 s);
        # only then does the node's idle timeout start.
        RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S=str(PROXY_DRAIN_S),
        # The ingress reads its API keys from here, as on the cluster's head.
        FLUX2_API_KEYS=API_KEY,
        PYTHONPATH=str(REPO),
    )
    return env


class ScenarioProcess:
    """One scenario started in a process of its own (``python -m tests.cluster.simulation <scenario> <out.json>``),
    its output in ``scenario.log`` of its Ray temp dir."""

    def __init__(self, name: str):
        self.name = name
        self.temp_dir = Path(tempfile.mkdtemp(prefix="f2sim-", dir="/tmp"))  # short: Ray's sockets must fit 107 bytes
        self.out = self.temp_dir / "figures.json"
        command = [sys.executable, "-m", "tests.cluster.simulation", name, str(self.out)]
        with (self.temp_dir / "scenario.log").open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=REPO,
                env=environment(self.temp_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """Its own process group: the scenario's Ray processes only."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def figures(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the scenario, kill whatever it left running and return its figures."""
        try:
            returncode = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            self.kill()
        log = (self.temp_dir / "scenario.log").read_text(errors="replace")[-3000:]
        assert returncode == 0, f"scenario {self.name} failed (exit {returncode}); logs under {self.temp_dir}\n{log}"
        figures = json.loads(self.out.read_text())
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return figures


def serve_config(port: int, replicas: tuple[int, int] | None = None) -> dict[str, Any]:
    """cluster/serve-config-gpu.yaml on this machine: the tiny model instead of klein-4B, HTTP on 127.0.0.1:port,
    Serve's scale-down delay and metrics windows shortened so a scenario takes minutes, not hours; ``replicas``
    replaces (min_replicas, max_replicas). Everything else (resources, ingress pinning, queue bounds, drain and
    health-check times, surge, limits) is the production value."""
    config = yaml.safe_load(GPU_SERVE_CONFIG.read_text())
    config["http_options"].update(host="127.0.0.1", port=port)
    model = model_args(config)
    model.pop("compile_cache_dir")
    model.update(source="tiny-dev", warmup_shapes=[{"width": 64, "height": 64, "references": 0}])
    (deployment,) = [d for d in config["applications"][0]["deployments"] if d["name"] == MODEL]
    autoscaling = deployment["autoscaling_config"]
    autoscaling.update(downscale_delay_s=5, look_back_period_s=5, metrics_interval_s=1)
    if replicas:
        autoscaling.update(min_replicas=replicas[0], max_replicas=replicas[1])
    return config


def model_args(config: dict[str, Any]) -> dict[str, Any]:
    """The served model's entry in the config's app args."""
    return config["applications"][0]["args"]["models"][0]


def deploy(config: dict[str, Any]) -> None:
    """What `serve run <config>` and `serve deploy <config>` do: start Serve as configured, hand the controller
    the whole config (it builds the app and applies the `deployments:` overrides)."""
    schema = ServeDeploySchema.model_validate(config)
    client = serve_api.serve_start(
        http_options=schema.http_options.model_dump(),
        proxy_location=schema.proxy_location,
        grpc_options=schema.grpc_options.model_dump(),
    )
    client.deploy_apps(schema)


def wait_for(
    condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.5, required: bool = True
) -> float | None:
    """Seconds until ``condition()`` held. After ``timeout_s``: fails the scenario naming ``what``, or returns None
    where the condition is not ``required``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            assert not required, f"not within {timeout_s:g}s: {what}"
            return None
        time.sleep(interval_s)
    return time.monotonic() - started


class SimCluster:
    """A head like the cluster's (no GPU; advertises ``flux2_ingress``) and GPU worker nodes that Ray's autoscaler
    adds, up to ``max_gpu_nodes``, and removes once idle for ``idle_timeout_s``. Connects this process to it."""

    def __init__(self, max_gpu_nodes: int, idle_timeout_s: float = IDLE_TIMEOUT_S):
        self.max_gpu_nodes = max_gpu_nodes
        self.idle_timeout_s = idle_timeout_s

    def _autoscaler_config(self, gcs_address: str) -> dict[str, Any]:
        # The fake provider's own example config, spelt as an "external" provider: Ray's wheel leaves out the
        # defaults file that the "fake_multinode" type would load.
        return {
            "cluster_name": "flux2-sim",
            "max_workers": self.max_gpu_nodes,
            "upscaling_speed": 1.0,
            "idle_timeout_minutes": self.idle_timeout_s / 60,
            "provider": {
                "type": "external",
                "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
                "gcs_address": gcs_address,
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
            },
            "available_node_types": {
                "ray.head.default": {"resources": {}, "node_config": {}, "max_workers": 0},
                # The GPU pod of cluster/rayservice.yaml: 8 CPUs and one GPU, so one model replica (num_cpus: 4,
                # num_gpus: 1) a node and CPU to spare, where an unpinned ingress replica could land.
                "gpu_worker": {
                    "resources": {"CPU": 8, "GPU": 1, "object_store_memory": OBJECT_STORE_BYTES},
                    "node_config": {},
                    "min_workers": 0,
                    "max_workers": self.max_gpu_nodes,
                },
            },
            "head_node_type": "ray.head.default",
            "auth": {},
            "docker": {},
            "file_mounts": {},
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "rsync_exclude": [],
            "rsync_filter": [],
        }

    def __enter__(self) -> SimCluster:
        port = free_port()
        config = Path(os.environ["RAY_TMPDIR"]) / "autoscaler.json"
        config.write_text(json.dumps(self._autoscaler_config(f"127.0.0.1:{port}")))
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "gcs_server_port": port,
                "node_ip_address": "127.0.0.1",
                "num_cpus": 2,
                "num_gpus": 0,
                "resources": {"flux2_ingress": 100},
                "object_store_memory": OBJECT_STORE_BYTES,
                "include_dashboard": False,
                "dashboard_agent_listen_port": 0,  # any free port, not Ray's default that another Ray may hold
                "autoscaling_config": str(config),
            },
        )
        monitor = self.cluster.head_node.all_processes[ray_constants.PROCESS_TYPE_MONITOR][0].process
        self.autoscaler = psutil.Process(monitor.pid)  # the provider starts the worker nodes from this process
        self.head = self.cluster.head_node.node_id
        ray.init(address=self.cluster.address, log_to_driver=False)
        return self

    def __exit__(self, *exc_info: object) -> None:
        worker_nodes = self.autoscaler.children(recursive=True)
        ray.shutdown()
        self.cluster.shutdown()
        for process in worker_nodes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()

    @staticmethod
    def gpu_nodes() -> set[str]:
        """Alive nodes that advertise a GPU."""
        return {node["NodeID"] for node in ray.nodes() if node["Alive"] and node["Resources"].get("GPU")}

    @staticmethod
    def details() -> dict[str, Any]:
        """What the Serve controller knows (the dashboard's /api/serve/applications/ shows the same)."""
        return ray.get(_get_global_client()._controller.get_serve_instance_details.remote())

    def replicas(self, deployment: str, state: str | None = "RUNNING") -> list[dict[str, Any]]:
        """The deployment's replicas in ``state`` (None: any, stopping ones included): replica_id, node_id, ..."""
        app = self.details()["applications"].get(APP, {"deployments": {}})
        replicas = app["deployments"].get(deployment, {"replicas": []})["replicas"]
        return [replica for replica in replicas if state in (None, replica["state"])]

    def proxy_nodes(self) -> set[str]:
        """The nodes that run a Serve HTTP proxy (draining ones included)."""
        return set(self.details()["proxies"])

    def replica_health_metric(self) -> list[float]:
        """The model replicas' ``ray_serve_deployment_replica_healthy`` values, scraped from the head's Prometheus
        endpoint; the port is the head's ``MetricsExportPort`` in ``ray.nodes()``."""
        (head,) = [node for node in ray.nodes() if node["NodeID"] == self.head]
        text = httpx.get(f"http://127.0.0.1:{head['MetricsExportPort']}/metrics", timeout=10).text
        series = [line for line in text.splitlines() if line.startswith("ray_serve_deployment_replica_healthy{")]
        return [float(line.rsplit(" ", 1)[1]) for line in series if f'deployment="{MODEL}"' in line]

    def served_calls(self, replica: dict[str, Any]) -> int:
        """Generations the replica answered, counted in its Serve access log."""
        path = Path(self.cluster.head_node.get_logs_dir_path()) / replica["log_file_path"].lstrip("/")
        return path.read_text().count("CALL generate OK") if path.exists() else 0

    def kill_node(self, node_id: str) -> None:
        """The node dies at once, as a machine does: SIGKILL to its raylet, then to every process under it (agents,
        workers, replicas). The raylet goes first, so the GCS learns of the death only from its health checks, as
        from a dead machine (a raylet that outlives its agent may report its own exit)."""
        (raylet,) = [
            p
            for p in self.autoscaler.children()
            if p.name() == "raylet" and f"--node_id={node_id}" in " ".join(p.cmdline())
        ]
        below = raylet.children(recursive=True)
        for process in [raylet, *below]:
            process.kill()


@dataclass(frozen=True)
class Outcome:
    """One request as its client saw it: ok (200 with the decoded image), rejected (503 with Retry-After and an
    error body), failed (anything else, a dropped connection included) or hung (no answer in CLIENT_TIMEOUT_S)."""

    kind: str
    started: float
    ended: float
    detail: str = ""
    steps: int = 0


def send(http: httpx.Client) -> Outcome:
    started = time.monotonic()
    try:
        response = http.post("/v1/images/generations", json=BODY, headers={"authorization": f"Bearer {API_KEY}"})
    except httpx.TimeoutException:
        return Outcome("hung", started, time.monotonic())
    except httpx.TransportError as exc:
        return Outcome("failed", started, time.monotonic(), type(exc).__name__)
    ended = time.monotonic()
    is_json = response.headers.get("content-type", "").startswith("application/json")
    body = response.json() if is_json else {}
    if response.status_code == 200 and decode_b64_image(body["data"][0]["b64_json"]).size == (128, 128):
        return Outcome("ok", started, ended, steps=int(response.headers["x-num-inference-steps"]))
    code = body.get("error", {}).get("code")
    if response.status_code == 503 and "retry-after" in response.headers and code:
        return Outcome("rejected", started, ended, code)
    return Outcome("failed", started, ended, f"{response.status_code} {code or response.text[:80]}")


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    """Outcomes by kind and, for those not ok, by error code or exception."""
    return dict(Counter(f"{o.kind}: {o.detail}" if o.detail else o.kind for o in outcomes))


class Load:
    """Closed-loop clients against one proxy port: each sends its next request when the last one is answered (a
    second after a 503: a client honouring Retry-After does not hammer), until the ``with`` block ends or each
    has sent ``max_requests``."""

    def __init__(self, port: int, clients: int, max_requests: int = 5000):
        self.url = f"http://127.0.0.1:{port}"
        self.max_requests = max_requests
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def _client(self) -> None:
        with httpx.Client(base_url=self.url, timeout=CLIENT_TIMEOUT_S) as http:
            for _ in range(self.max_requests):
                if self._stop.is_set():
                    return
                outcome = send(http)
                self.outcomes.append(outcome)
                if outcome.kind == "rejected":
                    self._stop.wait(1.0)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=CLIENT_TIMEOUT_S + 5)
        assert not any(thread.is_alive() for thread in self._threads), "a client never returned"

    def counts(self) -> dict[str, Any]:
        kinds = Counter(outcome.kind for outcome in self.outcomes)
        return {
            "sent": len(self.outcomes),
            **{kind: kinds[kind] for kind in ("ok", "rejected", "failed", "hung")},
            "not_ok": summary([outcome for outcome in self.outcomes if outcome.kind != "ok"]),
        }

    def between(self, start: float, end: float = float("inf")) -> list[Outcome]:
        """Requests sent in [start, end)."""
        return [outcome for outcome in self.outcomes if start <= outcome.started < end]

    def in_flight_at(self, moment: float) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.started < moment < outcome.ended]


def on_head_only(cluster: SimCluster) -> bool:
    """Every running ingress replica is on the head node."""
    ingress = cluster.replicas(INGRESS)
    return bool(ingress) and all(replica["node_id"] == cluster.head for replica in ingress)


def scale_out_and_in() -> dict[str, Any]:
    """Load brings a second replica that serves from a second GPU node; without load both go away again."""
    port = free_port()
    with SimCluster(max_gpu_nodes=2) as cluster:
        deploy(serve_config(port))
        first_replica_s = wait_for(lambda: len(cluster.replicas(MODEL)) == 1, 240, "the first model replica")
        start = {"gpu_nodes": len(cluster.gpu_nodes()), "ingress_on_head_only": on_head_only(cluster)}

        def serving_nodes() -> set[str]:
            return {r["node_id"] for r in cluster.replicas(MODEL) if cluster.served_calls(r) > 0}

        with Load(port, clients=4) as load:
            second_serving_s = wait_for(lambda: len(serving_nodes()) == 2, 240, "a second node's replica serving")
            time.sleep(10)  # both serve for a while
            running = cluster.replicas(MODEL)
            peak = {
                "replicas": len(running),
                "nodes_with_a_replica": len({r["node_id"] for r in running}),
                "gpu_nodes": len(cluster.gpu_nodes()),
                "ingress_on_head_only": on_head_only(cluster),
            }
        replica_gone_s = wait_for(lambda: len(cluster.replicas(MODEL)) == 1, 180, "the extra replica gone")
        (kept,) = {r["node_id"] for r in cluster.replicas(MODEL)}
        used = {r["node_id"] for r in running}
        proxy_gone_s = wait_for(lambda: not (used - {kept}) & cluster.proxy_nodes(), 180, "the idle node's proxy gone")
        node_gone_s = wait_for(lambda: cluster.gpu_nodes() == {kept}, 180, "the idle node gone")
        wait_for(lambda: 1.0 in cluster.replica_health_metric(), 60, "the replica health metric exported", 2)
        return {
            "first_replica_s": round(first_replica_s, 1),
            "start": start,
            "second_node_serving_s": round(second_serving_s, 1),
            "peak": peak,
            "load": load.counts(),
            "calls_per_replica": sorted(cluster.served_calls(r) for r in running),
            "after_load_replica_gone_s": round(replica_gone_s, 1),
            "after_load_proxy_gone_s": round(replica_gone_s + proxy_gone_s, 1),
            "after_load_node_gone_s": round(replica_gone_s + proxy_gone_s + node_gone_s, 1),
            "end": {
                "replicas": len(cluster.replicas(MODEL)),
                "gpu_nodes": len(cluster.gpu_nodes()),
                "ingress_on_head_only": on_head_only(cluster),
                "nodes_used": len(used),
                "replica_healthy_metric": cluster.replica_health_metric(),
            },
        }


def node_dies() -> dict[str, Any]:
    """A GPU node dies with requests in flight: they are answered, the replica comes back on a new node.

    Four clients enter through the head's proxy (``ray up``, or a Service on the head pod); two through the
    worker nodes' proxies, where KubeRay's serve Service also sends traffic."""
    port = free_port()
    worker_port = int(os.environ["RAY_SERVE_WORKER_PROXY_HTTP_PORT"])
    # Two replicas, so one survives the node; a third node slot for the replacement.
    with SimCluster(max_gpu_nodes=3) as cluster:
        deploy(serve_config(port, replicas=(2, 2)))
        wait_for(lambda: len({r["node_id"] for r in cluster.replicas(MODEL)}) == 2, 240, "two replicas on two nodes")
        with Load(port, clients=4) as load, Load(worker_port, clients=2) as via_workers:
            wait_for(lambda: all(cluster.served_calls(r) for r in cluster.replicas(MODEL)), 120, "both serving")
            victim = cluster.replicas(MODEL)[0]["node_id"]
            cluster.kill_node(victim)
            killed = time.monotonic()
            detected_s = wait_for(lambda: victim not in cluster.gpu_nodes(), 120, "the dead node marked dead")

            def whole() -> bool:
                nodes = {r["node_id"] for r in cluster.replicas(MODEL)}
                return len(nodes) == 2 and victim not in nodes and nodes <= cluster.gpu_nodes()

            recovered_s = detected_s + wait_for(whole, 180, "two replicas on live nodes again")
            time.sleep(5)  # serving whole again
        in_flight = load.in_flight_at(killed)
        assert in_flight, "no request was in flight when the node died"
        return {
            "load": load.counts(),
            "in_flight_at_kill": summary(in_flight),
            "slowest_in_flight_answer_s": round(max(o.ended for o in in_flight) - killed, 1),
            "dead_node_detected_s": round(detected_s, 1),
            "recovered_s": round(recovered_s, 1),
            "after_recovery": summary(load.between(killed + recovered_s)),
            "via_worker_proxies": via_workers.counts(),
            "via_worker_proxies_in_flight_at_kill": summary(via_workers.in_flight_at(killed)),
        }


def deploy_under_load(ingress_actor_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """A changed config deployed while clients loop: every request answered 200, the new default afterwards. The
    new ingress replicas start on the head though two GPU nodes are up, and the old replica's node goes away.

    ``ingress_actor_options`` replace the ingress's pinned ones, for the control run."""
    port = free_port()
    # One replica, so the rollout has no second one to hide behind; the surge replica takes the second node.
    config = serve_config(port, replicas=(1, 1))
    if ingress_actor_options is not None:
        (ingress,) = [d for d in config["applications"][0]["deployments"] if d["name"] == INGRESS]
        ingress["ray_actor_options"] = ingress_actor_options
    with SimCluster(max_gpu_nodes=2) as cluster:
        deploy(config)
        wait_for(lambda: len(cluster.replicas(MODEL)) == 1, 240, "the model replica")
        old = {r["replica_id"] for r in cluster.replicas(MODEL) + cluster.replicas(INGRESS)}
        model_args(config)["default_steps"] = 2  # tiny-dev's default is 4
        unlisted: list[float] = []  # when serve.status() listed no model deployment (the app being rebuilt)

        def rolled_out() -> bool:
            """Three new replicas running and the old ones gone, not merely draining (a draining ingress replica
            still answers with the old config what its proxy sent it)."""
            if MODEL not in serve.status().applications[APP].deployments:
                unlisted.append(time.monotonic())
            running = cluster.replicas(MODEL) + cluster.replicas(INGRESS)
            alive = cluster.replicas(MODEL, state=None) + cluster.replicas(INGRESS, state=None)
            return len(running) == 3 and not old & {r["replica_id"] for r in alive}

        with Load(port, clients=2) as load:
            time.sleep(5)
            deployed = time.monotonic()
            deploy(config)
            rolled_out_s = wait_for(rolled_out, 240, "every replica replaced", interval_s=0.25)
            during = {"gpu_nodes": len(cluster.gpu_nodes()), "new_ingress_on_head_only": on_head_only(cluster)}
            time.sleep(5)  # the new config serving
        old_node_gone_s = wait_for(
            lambda: len(cluster.gpu_nodes()) == 1, NODE_KEPT_UP_AFTER_S, "the old node gone", required=False
        )
        gpu_nodes_end = len(cluster.gpu_nodes())

    def steps(outcomes: list[Outcome]) -> dict[int, int]:
        return dict(Counter(o.steps for o in outcomes if o.kind == "ok"))

    return {
        "load": load.counts(),
        "rolled_out_s": round(rolled_out_s, 1),
        "status_without_model_s": round(unlisted[-1] - deployed, 1) if unlisted else 0.0,
        "steps_before": steps(load.between(0, deployed)),
        "steps_after": steps(load.between(deployed + rolled_out_s)),
        "rollout": during,
        "old_node_gone_after_s": None if old_node_gone_s is None else round(old_node_gone_s, 1),
        "gpu_nodes_end": gpu_nodes_end,
    }


SCENARIOS: dict[str, Callable[[], dict[str, Any]]] = {
    "scale_out_and_in": scale_out_and_in,
    "node_dies": node_dies,
    "deploy_under_load": deploy_under_load,
    # The control: no pin, and an ingress replica as large as what the head has left (2 CPUs, 2 replicas), so the
    # surge replica of a rollout has to go to a GPU node.
    "deploy_unpinned_ingress": lambda: deploy_under_load({"num_cpus": 1}),
}


def main() -> None:
    name, out = sys.argv[1], Path(sys.argv[2])
    started = time.monotonic()
    figures = SCENARIOS[name]()
    out.write_text(json.dumps({**figures, "scenario_s": round(time.monotonic() - started, 1)}, indent=2))


if __name__ == "__main__":
    main()
