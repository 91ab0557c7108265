"""The cluster, simulated: GPU nodes that autoscale, a node that dies under traffic, a deploy under load.

Each scenario (tests/cluster/simulation.py) runs the production Serve config with the tiny model on a Ray
cluster of its own: a head with the ingress resource and no GPU, and fake ``GPU: 1`` worker nodes that Ray's
autoscaler launches and removes. It runs in a separate process, so it neither needs nor touches the test
session's Ray (``ray_cluster``); the scenarios run in the background while the suites before these tests run
(conftest.py). The figures are printed and written to test-artifacts/cluster.json; docs/operations.md records a run.
"""

from __future__ import annotations

from typing import Any

import pytest

# What a client may see when the node under its request dies: the ingress's clean 503.
CLEAN_REJECTION = "rejected: replica_died"
# Requests entering through the dying node's own proxy lose their connection instead.
DROPPED_CONNECTION = {"failed: RemoteProtocolError", "failed: ReadError", "failed: ConnectError"}


@pytest.mark.scenario("scale_out_and_in")
def test_gpu_nodes_scale_out_under_load_and_back_in_without_it(figures: dict[str, Any]) -> None:
    assert figures["start"] == {"gpu_nodes": 1, "ingress_on_head_only": True}
    # One replica per node, both serving, the ingress still on the head.
    assert figures["peak"] == {"replicas": 2, "nodes_with_a_replica": 2, "gpu_nodes": 2, "ingress_on_head_only": True}
    assert min(figures["calls_per_replica"]) >= 1
    load = figures["load"]
    assert load["sent"] > 0 and load["ok"] == load["sent"], load
    # Replica, then its proxy, then the node: nothing of the ingress's kept the node up.
    end = figures["end"]
    assert {key: end[key] for key in ("replicas", "gpu_nodes", "ingress_on_head_only", "nodes_used")} == {
        "replicas": 1,
        "gpu_nodes": 1,
        "ingress_on_head_only": True,
        "nodes_used": 2,
    }
    # The health gauge docs/operations.md names, as Ray 2.60 exports it: 1 for the running replica.
    assert 1.0 in end["replica_healthy_metric"], end


@pytest.mark.scenario("node_dies")
def test_a_node_dying_under_traffic_answers_every_request_and_the_service_recovers(figures: dict[str, Any]) -> None:
    load = figures["load"]
    assert load["hung"] == 0 and load["failed"] == 0, load
    assert set(load["not_ok"]) <= {CLEAN_REJECTION}, load
    assert set(figures["in_flight_at_kill"]) <= {"ok", CLEAN_REJECTION}
    after = figures["after_recovery"]
    assert after.get("ok", 0) >= 1 and set(after) == {"ok"}, after
    # Through a worker's proxy: the dying node's in-flight connections drop; still none hangs.
    via_workers = figures["via_worker_proxies"]
    assert via_workers["hung"] == 0 and via_workers["ok"] >= 1, via_workers
    assert set(via_workers["not_ok"]) <= DROPPED_CONNECTION | {CLEAN_REJECTION}, via_workers


@pytest.mark.scenario("deploy_under_load")
def test_a_changed_config_deployed_under_load_fails_no_request(figures: dict[str, Any]) -> None:
    load = figures["load"]
    assert load["sent"] > 0 and load["ok"] == load["sent"], load
    # tiny-dev's default of 4 steps before, the deployed default of 2 after (JSON keys are strings).
    assert set(figures["steps_before"]) == {"4"} and set(figures["steps_after"]) == {"2"}, figures
    # The surge replica took a second GPU node; the new ingress replicas started on the head only, so the old
    # replica's node went away.
    assert figures["rollout"] == {"gpu_nodes": 2, "new_ingress_on_head_only": True}
    assert figures["old_node_gone_after_s"] is not None and figures["gpu_nodes_end"] == 1


@pytest.mark.scenario("deploy_unpinned_ingress")
def test_without_the_pin_a_rollout_puts_an_ingress_replica_on_a_gpu_node(figures: dict[str, Any]) -> None:
    """The control of the placement checks above: they can fail. Unpinned, with the head's CPU taken by the two
    ingress replicas, the rollout's surge ingress replica starts on a GPU node, and that node stays up."""
    assert figures["rollout"]["new_ingress_on_head_only"] is False, figures
    assert figures["old_node_gone_after_s"] is None and figures["gpu_nodes_end"] == 2, figures
    assert figures["load"]["ok"] == figures["load"]["sent"], figures["load"]
