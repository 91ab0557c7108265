"""How many replicas of each model deployment are running and alive.

The ingress reads this before it routes a request, and while the request waits: a model with no running
replica (its only one crashed and the replacement is still loading, or it is still starting) is answered at
once instead of holding the client until a replica is warm. The Serve controller's count lags a crash by
several seconds (it lists a killed replica as RUNNING until its next health check, 7 s after a SIGKILL in
tests/serve/test_production.py's crash test), so it is capped by the replica actors Ray's GCS still has: a dead actor
leaves that list within a second. The count is shared by all requests and refreshed off the event loop once
it is ``max_age_s`` old.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import ray
from ray import serve

SERVE_NAMESPACE = "serve"
SERVING = ("RUNNING", "UPDATING")  # a replica being reconfigured (user_config) still serves
REPLICA_ACTOR_PREFIX = "SERVE_REPLICA::"  # Serve names a replica's actor SERVE_REPLICA::<app>#<deployment>#<id>


class ReplicaWatch:
    """Running replicas per served model name (``deployments`` maps names to deployment names)."""

    def __init__(self, deployments: dict[str, str], max_age_s: float = 0.5, poll_s: float = 0.25):
        self.deployments = deployments
        self.max_age_s = max_age_s
        self.poll_s = poll_s
        self._running: dict[str, int | None] = {}
        self._read_at = -float("inf")
        self._lock = asyncio.Lock()
        self._refreshing: asyncio.Task | None = None

    def _read(self) -> dict[str, int | None]:
        app = serve.get_replica_context().app_name
        application = serve.status().applications.get(app)
        listed = application.deployments if application else {}
        alive = alive_replica_actors(app)
        return {
            name: min(sum(listed[deployment].replica_states.get(state, 0) for state in SERVING), alive[deployment])
            if deployment in listed
            else None
            for name, deployment in self.deployments.items()
        }

    async def refresh(self) -> dict[str, int | None]:
        """Ask the controller now (one request at a time; callers that waited share its answer)."""
        async with self._lock:
            if time.monotonic() - self._read_at > self.poll_s:
                self._running = await asyncio.to_thread(self._read)
                self._read_at = time.monotonic()
        return dict(self._running)

    async def running(self, name: str) -> int | None:
        """Running replicas of ``name``, or None while Serve lists no such deployment (an application being
        redeployed, whose old replicas may still serve). A stale count is refreshed in the background: a
        request waits for the controller only when the count it would act on is zero or was never read."""
        stale = time.monotonic() - self._read_at > self.max_age_s
        if stale and name in self._running and self._running[name] != 0:
            if self._refreshing is None or self._refreshing.done():
                self._refreshing = asyncio.create_task(self.refresh())
        elif stale:
            await self.refresh()
        return self._running.get(name)

    async def until_none_running(self, name: str) -> None:
        """Return once ``name`` is listed with no running replica."""
        while await self.running(name) != 0:
            await asyncio.sleep(self.poll_s)

    async def wait_for_running(self, name: str, timeout_s: float) -> bool:
        """False when ``name`` has no running replica within ``timeout_s``. A deployment Serve does not list is
        left to Serve's own routing (True)."""
        deadline = time.monotonic() + timeout_s
        while await self.running(name) == 0:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(self.poll_s)
            await self.refresh()
        return True


def alive_replica_actors(app: str) -> Counter[str]:
    """Replica actors per deployment of ``app`` that Ray's GCS lists as alive (a dead one is dropped at once)."""
    prefix = f"{REPLICA_ACTOR_PREFIX}{app}#"
    return Counter(
        actor["name"][len(prefix) :].split("#", 1)[0]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["namespace"] == SERVE_NAMESPACE and actor["name"].startswith(prefix)
    )
