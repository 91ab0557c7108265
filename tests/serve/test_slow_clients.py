"""Slow and idle clients against real Serve: sockets that send a request's headers and then stall its body.

Each holds one request of the ingress until ``limits.body_timeout_s`` (plus its rate allowance) has passed, then
gets 408 and a closed connection; meanwhile health checks and generations keep being answered.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml

from tests.helpers import REPO, TEST_LIMITS, decode_b64_image, served_app, wait_until

SLOW_SOCKETS = 1000
# Long enough for the proxy to take in all the sockets (~6 s on two busy cores: ~5 ms a request) and the checks.
BODY_TIMEOUT_S = 15.0
STALLED = (
    b"POST {prefix}/v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n" + b'{"prompt":'
)


@pytest.fixture(scope="module")
def slow_url(ray_cluster: dict[str, int]) -> Iterator[str]:
    config = {
        "models": [
            {
                "name": "tiny-klein",
                "source": "tiny-klein",
                "warmup_shapes": [{"width": 64, "height": 64, "references": 0}],
                "default_size": [64, 64],
                "deployment_options": {"ray_actor_options": {"num_cpus": 0.1}},
            }
        ],
        "limits": {**TEST_LIMITS, "body_timeout_s": BODY_TIMEOUT_S, "min_body_bytes_per_s": 1024},
        "ingress_options": {"ray_actor_options": {"num_cpus": 0.1}},
    }
    with served_app(config, "slow", "/slow", ray_cluster["http"]) as url:
        yield url


def stalled_sockets(port: int, prefix: str, count: int) -> list[socket.socket]:
    """``count`` connections, each with a request's headers and 10 bytes of its 1,000-byte body sent."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(STALLED.replace(b"{prefix}", prefix.encode()))
        sockets.append(sock)
    return sockets


def test_stalled_bodies_do_not_starve_the_service(slow_url: str, ray_cluster: dict[str, int]) -> None:
    sockets = stalled_sockets(ray_cluster["http"], "/slow", SLOW_SOCKETS)
    opened = time.monotonic()
    try:
        with httpx.Client(base_url=slow_url, timeout=30) as client:
            # The proxy takes new connections in at a few hundred a second; once it has them all, they only wait.
            assert wait_until(lambda: timed_health(client) < 1.0, timeout_s=BODY_TIMEOUT_S - 4, interval_s=0.2)
            health_s = [timed_health(client) for _ in range(5)]
            generated = client.post("/v1/images/generations", json={"prompt": "a cat", "seed": 1})
            held_s = time.monotonic() - opened
        assert max(health_s) < 1.0, health_s
        assert generated.status_code == 200, generated.text
        assert decode_b64_image(generated.json()["data"][0]["b64_json"]).size == (64, 64)
        assert held_s < BODY_TIMEOUT_S, f"checked after {held_s:.1f}s: the stalled bodies may have timed out first"
        # Every stalled client is answered 408 with the error object once its deadline passes, and disconnected.
        answers = [read_until_closed(sock) for sock in sockets]
        assert time.monotonic() - opened >= BODY_TIMEOUT_S
        assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), {a[:40] for a in answers}
        assert all(b'"code":"body_timeout"' in a and b"connection: close" in a.lower() for a in answers)
    finally:
        for sock in sockets:
            sock.close()


def timed_health(client: httpx.Client) -> float:
    started = time.monotonic()
    assert client.get("/healthz").status_code == 200
    return time.monotonic() - started


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a socket timeout fails the test)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_slow_body_within_its_rate_is_served(slow_url: str, ray_cluster: dict[str, int]) -> None:
    """A body trickling in, but faster than its allowance, is read to the end and answered."""
    body = b'{"prompt": "a cat", "seed": 3}'
    head = (
        "POST /slow/v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", ray_cluster["http"]), timeout=60) as sock:
        sock.sendall(head.encode())
        for start in range(0, len(body), 10):
            sock.sendall(body[start : start + 10])
            time.sleep(1.0)  # 3 s in all, well under the allowance
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


def test_idle_keep_alive_connections_are_closed(slow_url: str, ray_cluster: dict[str, int]) -> None:
    """The proxy (started with the quick start's ``http_options``) closes a keep-alive connection left idle for
    ``keep_alive_timeout_s`` after its last answer."""
    idle_s = yaml.safe_load((REPO / "serve_config.yaml").read_text())["http_options"]["keep_alive_timeout_s"]
    with socket.create_connection(("127.0.0.1", ray_cluster["http"]), timeout=idle_s + 10) as sock:
        sock.sendall(b"GET /slow/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        response = sock.recv(65536)
        assert response.startswith(b"HTTP/1.1 200")
        while not response.endswith(b'{"status":"ok"}'):  # after the stalled sockets the body may come on its own
            chunk = sock.recv(65536)
            assert chunk, response  # not closed before the body
            response += chunk
        started = time.monotonic()
        assert sock.recv(65536) == b""  # closed by the server, not by the timeout above
        assert idle_s - 0.5 <= time.monotonic() - started < idle_s + 5
