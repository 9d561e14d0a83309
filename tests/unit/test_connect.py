"""How the jobs reach Ray, checked without starting it: address checks and the local default."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from stress import cluster
from stress.errors import StressError


def listener(reply: bytes | None) -> int:
    """A loopback TCP server that is not Ray: silent, or answering `reply` once. Returns its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve():
        connection, _ = server.accept()
        if reply is not None:
            connection.recv(1024)
            connection.sendall(reply)
        time.sleep(3)
        connection.close()
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1]


def test_a_silent_open_port_is_not_taken_for_a_ray_head():
    port = listener(None)
    started = time.monotonic()
    with pytest.raises(StressError, match="accepts connections but does not answer like a Ray head"):
        cluster._check_reachable(f"127.0.0.1:{port}", timeout_s=1.0)
    assert time.monotonic() - started < 5


def test_a_web_server_is_not_a_ray_head():
    port = listener(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(StressError, match="is not a Ray head \\(it does not speak gRPC\\)"):
        cluster._check_reachable(f"127.0.0.1:{port}", timeout_s=2.0)


def test_a_grpc_server_passes_the_check():
    # What a gRPC (HTTP/2) server sends first: a SETTINGS frame (type 4) on stream 0.
    port = listener(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
    cluster._check_reachable(f"127.0.0.1:{port}", timeout_s=2.0)


@pytest.mark.parametrize("address", ["127.0.0.1", "host:port", "ray://:10001", "http://[::1"])
def test_malformed_addresses_are_one_line_errors(address):
    with pytest.raises(StressError, match="is not of the form HOST:PORT"):
        cluster._check_reachable(address, timeout_s=1.0)


def test_a_local_run_starts_its_own_instance(monkeypatch):
    """Without --address or RAY_ADDRESS, ray.init gets address="local": a plain ray.init() would
    join the cluster recorded in /tmp/ray/ray_current_cluster by an earlier `ray start`."""
    seen = {}

    def fake_init(**kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(cluster.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(cluster.ray, "init", fake_init)
    with pytest.raises(StressError, match="cannot connect to Ray at a local instance"):
        cluster.connect()
    assert seen["address"] == "local" and seen["include_dashboard"] is False
