"""How the jobs reach Ray, checked without starting it: address checks and the local default."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from stress.driver import cluster, connection, resources
from stress.errors import StressError

REPO = Path(__file__).resolve().parents[3]


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


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports that nothing listens on now."""
    sockets = [socket.socket() for _ in range(n)]
    for server in sockets:
        server.bind(("127.0.0.1", 0))
    ports = [server.getsockname()[1] for server in sockets]
    for server in sockets:
        server.close()
    return ports


def test_a_silent_open_port_is_not_taken_for_a_ray_head():
    port = listener(None)
    started = time.monotonic()
    with pytest.raises(StressError, match="accepts connections but does not answer like a Ray head"):
        connection._check_reachable(f"127.0.0.1:{port}", timeout_s=1.0)
    assert time.monotonic() - started < 5


def test_a_web_server_is_not_a_ray_head():
    port = listener(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(StressError, match="is not a Ray head \\(it does not speak gRPC\\)"):
        connection._check_reachable(f"127.0.0.1:{port}", timeout_s=2.0)


def test_a_grpc_server_passes_the_check():
    # What a gRPC (HTTP/2) server sends first: a SETTINGS frame (type 4) on stream 0.
    port = listener(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
    connection._check_reachable(f"127.0.0.1:{port}", timeout_s=2.0)


@pytest.mark.parametrize("address", ["127.0.0.1", "host:port", "ray://:10001", "http://[::1"])
def test_malformed_addresses_are_one_line_errors(address):
    with pytest.raises(StressError, match="is not of the form HOST:PORT"):
        connection._check_reachable(address, timeout_s=1.0)


def test_a_local_run_starts_its_own_instance(monkeypatch):
    """Without --address or RAY_ADDRESS, ray.init gets address="local": a plain ray.init() would
    join the cluster recorded in /tmp/ray/ray_current_cluster by an earlier `ray start`."""
    import os

    seen = {}

    def fake_init(**kwargs):
        seen.update(kwargs, environment={k: os.environ.get(k) for k in ("RAY_API_SERVER_ADDRESS", "RAY_TRAIN_ENABLE_PRINT_PATCH")})
        raise RuntimeError("stop here")

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.setattr(cluster.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(cluster.ray, "init", fake_init)
    with pytest.raises(StressError, match="cannot connect to Ray at a local instance"):
        cluster.connect()
    assert seen["address"] == "local"
    # Its dashboard on loopback, and the state API address its processes inherit (Train's cleaner asks it) ...
    assert seen["include_dashboard"] is True and seen["dashboard_host"] == "127.0.0.1"
    assert seen["environment"] == {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{seen['dashboard_port']}", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    # ... while this process gets its environment back.
    assert "RAY_API_SERVER_ADDRESS" not in os.environ


@pytest.mark.parametrize(("overrides", "needle"), [
    ({"gpus_per_worker": 2.0}, "each training worker asks for 2 GPU but this Ray instance has 0; lower --gpus-per-worker"),
    ({"task_gpus": 0.5}, "each fan-out task asks for 0.5 GPU but this Ray instance has 0; lower --task-gpus"),
    ({"cpus_per_worker": 3.0}, "each training worker asks for 3 CPU but this Ray instance has 2"),
    ({"workers_per_trainer": 3}, "one trainer needs 3 CPUs (3 workers x 1) but this Ray instance has 2"),
])
def test_requests_a_local_instance_cannot_grant_are_refused(monkeypatch, overrides, needle):
    import dataclasses

    from stress.config import ResourceConfig

    monkeypatch.setattr(resources, "cluster_has_gpus", lambda: False)
    with pytest.raises(StressError, match=needle.replace("(", "\\(").replace(")", "\\)")):
        resources.check_requests_fit(dataclasses.replace(ResourceConfig(), **overrides), {"CPU": 2.0, "memory": 1e9})
    resources.check_requests_fit(ResourceConfig(), {"CPU": 2.0, "memory": 1e9})  # the defaults fit on 2 CPUs


def test_requests_are_placed_per_node_not_against_the_cluster_total(monkeypatch):
    import dataclasses

    from stress.config import ResourceConfig

    monkeypatch.setattr(resources, "cluster_has_gpus", lambda: True)
    monkeypatch.setattr(resources, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 2.0})
    two_one_gpu_nodes = [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}]
    assert resources.unplaceable(ResourceConfig(), two_one_gpu_nodes) == []
    # 2 GPUs in total, but no node holds a 2-GPU worker.
    assert resources.unplaceable(dataclasses.replace(ResourceConfig(), gpus_per_worker=2.0), two_one_gpu_nodes) == [
        "a training worker (1 CPU, 2 GPU)"]
    assert resources.unplaceable(dataclasses.replace(ResourceConfig(), workers_per_trainer=3), two_one_gpu_nodes) == [
        "3 training workers of one trainer"]
    assert resources.unplaceable(dataclasses.replace(ResourceConfig(), workers_per_trainer=2), two_one_gpu_nodes) == []


def test_a_joined_cluster_is_given_time_to_add_nodes_then_the_job_refuses(monkeypatch):
    import dataclasses
    import sys
    import types

    from stress.config import ResourceConfig

    monkeypatch.setattr(resources, "cluster_has_gpus", lambda: True)
    monkeypatch.setattr(resources, "cluster_resources", lambda: {"CPU": 2.0, "GPU": 2.0})  # GPU nodes the autoscaler can add
    asked: list = []
    sdk = types.SimpleNamespace(request_resources=lambda bundles: asked.append(bundles))
    monkeypatch.setitem(sys.modules, "ray.autoscaler.sdk", sdk)
    clock = [0.0]
    monkeypatch.setattr(resources.time, "monotonic", lambda: clock[0])

    def sleep(seconds):
        clock[0] += seconds

    request = dataclasses.replace(ResourceConfig(), gpus_per_worker=1.0)
    # An autoscaling cluster: the GPU node arrives after 12 s.
    nodes = lambda: [{"CPU": 2.0}] + ([{"CPU": 8.0, "GPU": 1.0}] if clock[0] >= 12 else [])  # noqa: E731
    lines: list[str] = []
    resources.wait_for_nodes(request, 60, lines.append, nodes=nodes, sleep=sleep)
    assert asked[0] == [{"CPU": 1.0, "GPU": 1.0}] * 2 + [{"CPU": 1.0, "GPU": 0.25}] and asked[-1] == []  # asked, then withdrawn
    assert lines[0].startswith("waiting up to 60 s for nodes that can hold a training worker (1 CPU, 1 GPU)")
    assert lines[-1] == "nodes are there: starting" and 12 <= clock[0] < 20
    # A fixed cluster without GPUs: the wait ends in one line.
    clock[0], asked[:] = 0.0, []
    with pytest.raises(StressError) as info:
        resources.wait_for_nodes(request, 30, lines.append, nodes=lambda: [{"CPU": 2.0}], sleep=sleep)
    assert str(info.value).startswith("no node of this cluster can hold a training worker (1 CPU, 1 GPU)") and "after 30 s" in str(info.value)
    assert clock[0] == 30 and asked[-1] == []
    # Requests that fit start at once, without asking the autoscaler.
    asked[:] = []
    resources.wait_for_nodes(ResourceConfig(), 30, lines.append, nodes=lambda: [{"CPU": 2.0, "GPU": 1.0}], sleep=pytest.fail)
    assert asked == []


@pytest.mark.parametrize("overrides, totals, trials", [
    ({}, {"CPU": 2.0}, 1),  # two 1-CPU trainers per trial
    ({}, {"CPU": 8.0}, 4),
    ({"gpus_per_worker": 1.0}, {"CPU": 32.0, "GPU": 4.0}, 2),  # 4 single-GPU nodes of 8 CPUs: the GPUs decide
    ({"gpus_per_worker": 0.5}, {"CPU": 32.0, "GPU": 4.0}, 4),
    ({"gpus_per_worker": 1.0, "cpus_per_worker": 8.0}, {"CPU": 32.0, "GPU": 4.0}, 2),
    ({"cpus_per_worker": 8.0}, {"CPU": 8.0}, 1),  # never 0: one trial waits for the cluster to grow
])
def test_concurrent_trials_are_sized_by_the_scarcest_resource(monkeypatch, overrides, totals, trials):
    import dataclasses

    from stress.config import ResourceConfig

    monkeypatch.setattr(resources, "cluster_has_gpus", lambda: "GPU" in totals)
    assert resources.default_concurrent_trials(dataclasses.replace(ResourceConfig(), **overrides), totals) == trials


def test_a_task_uses_a_gpu_only_when_ray_assigned_it_one(monkeypatch):
    """Since Ray 2.60 a task that asked for no GPU still sees the node's GPUs: the device comes from ray.get_gpu_ids()."""
    import torch

    seen = []

    def body(x, device=None):
        seen.append(device)
        return x

    def no_device(x):
        return x

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU node
    monkeypatch.setattr(cluster.ray, "get_gpu_ids", lambda: [])
    assert cluster._on_assigned_device(body, True, 1) == 1 and seen == ["cpu"]
    monkeypatch.setattr(cluster.ray, "get_gpu_ids", lambda: [0])
    cluster._on_assigned_device(body, True, 1)
    assert seen == ["cpu", "cuda"]
    assert cluster._on_assigned_device(no_device, False, 2) == 2  # a body without a device argument is called as it is
    from stress.evaluate.shards import task_device

    assert task_device("cpu").type == "cpu"  # what the task body does with it, even where CUDA is visible


def test_coordinating_tasks_ask_for_the_non_spot_resource_only_where_the_cluster_has_it():
    assert cluster.coordinator_placement({"CPU": 8.0, "GPU": 4.0}) == {}
    assert cluster.coordinator_placement({"CPU": 8.0, "non_spot": 1000.0}) == {"resources": {"non_spot": 0.001}}


def test_gpu_node_types_of_the_autoscaler_count_before_any_gpu_node_is_up(monkeypatch):
    """A GPU pool that autoscales from zero: no GPU alive at start-up, yet the job plans for GPUs and for its shards."""
    monkeypatch.setattr(resources.ray, "cluster_resources", lambda: {"CPU": 4.0, "memory": 1e10})
    monkeypatch.setattr(resources, "autoscaler_maximum", lambda: {})
    assert not resources.cluster_has_gpus() and resources.resolve_gpus(-1, 0.25) == 0.0  # a fixed CPU cluster
    assert resources.available_slots(1.0, 0.0) == 4
    monkeypatch.setattr(resources, "autoscaler_maximum", lambda: {"CPU": 20.0, "GPU": 4.0})  # 4 x (4 CPU, 1 GPU) + head
    assert resources.cluster_has_gpus() and resources.resolve_gpus(-1, 0.25) == 0.25
    assert resources.available_slots(1.0, 0.25) == 16  # min(20 CPUs, 4 GPUs / 0.25)


def test_the_autoscaler_maximum_is_read_from_the_config_ray_publishes(monkeypatch):
    import types

    import ray._private.state as ray_state

    monkeypatch.setattr(ray_state, "state", types.SimpleNamespace(get_max_resources_from_cluster_config=lambda: {"GPU": 4, "CPU": 16}))
    assert resources.autoscaler_maximum() == {"GPU": 4.0, "CPU": 16.0}
    monkeypatch.setattr(ray_state, "state", types.SimpleNamespace(get_max_resources_from_cluster_config=lambda: None))
    assert resources.autoscaler_maximum() == {}


@pytest.mark.parametrize(("used", "threshold", "expected"), [
    (0.50, 0.95, None),     # plenty of room: Ray's default stays
    (0.9499, 0.95, None),
    (0.95, 0.95, 0.975),    # at the threshold: halfway to a full disk
    (0.9626, 0.95, 0.9813),  # the CI machine of stop 23: 9.42 GB free of 251.97 GB
    (0.30, 0.10, 0.65),     # a threshold the user set lower counts the same way
    (0.9999, 0.95, 0.999),  # never 1.0: Ray still refuses before the disk is full
])
def test_the_spill_threshold_is_raised_only_over_it(used, threshold, expected):
    raised = connection.raised_disk_threshold(used, threshold)
    assert raised == (None if expected is None else pytest.approx(expected, abs=1e-4))
    if raised is not None:  # independent of the formula: above the use now, below a full disk
        assert used < raised < 1.0 or used >= 0.999


def _local_init_environment(monkeypatch, used: float) -> tuple[dict, list[str]]:
    import os

    seen, lines = {}, []

    def fake_init(**kwargs):
        seen.update({k: os.environ.get(k) for k in ("RAY_local_fs_capacity_threshold",)})
        raise RuntimeError("stop here")

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_local_fs_capacity_threshold", raising=False)
    monkeypatch.setattr(connection, "_disk_in_use", lambda path: (used, 9.42))
    monkeypatch.setattr(cluster.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(cluster.ray, "init", fake_init)
    with pytest.raises(StressError):
        cluster.connect(log=lines.append)
    assert "RAY_local_fs_capacity_threshold" not in os.environ  # this process gets its environment back
    return seen, lines


def test_a_nearly_full_disk_gives_the_local_instance_a_higher_threshold_and_one_line(monkeypatch):
    seen, lines = _local_init_environment(monkeypatch, used=0.9626)
    assert seen["RAY_local_fs_capacity_threshold"] == "0.9813"
    assert len(lines) == 1 and lines[0].startswith("disk: ") and "96.3% full (9.4 GB free)" in lines[0]
    assert "from 95% to 98.1%" in lines[0]


def test_a_disk_with_room_leaves_ray_alone(monkeypatch):
    seen, lines = _local_init_environment(monkeypatch, used=0.22)
    assert seen["RAY_local_fs_capacity_threshold"] is None and lines == []


def test_node_types_maximum_is_each_type_times_its_count_under_the_launcher_s_cap():
    types = {
        "head": {"resources": {"CPU": 0, "non_spot": 1}, "max_workers": 0},
        "cpu": {"resources": {"CPU": 8}, "max_workers": 3},
        "gpu": {"resources": {"CPU": 4, "GPU": 1}, "max_workers": 2},
    }
    uncapped = {"available_node_types": types, "head_node_type": "head"}
    assert resources.node_types_maximum(uncapped) == {"CPU": 3 * 8 + 2 * 4, "GPU": 2.0, "non_spot": 1.0}
    # At most 2 worker nodes in all: per resource, the 2 largest nodes (8 + 8 CPUs, or 2 GPU nodes).
    assert resources.node_types_maximum({**uncapped, "max_workers": 2}) == {"CPU": 16.0, "GPU": 2.0, "non_spot": 1.0}
    assert resources.node_types_maximum({**uncapped, "max_workers": 0}) == {"non_spot": 1.0}  # the head alone
    # The project's own cluster.yaml: 4 GPU workers of (4 CPU, 1 GPU), a CPU-0 head.
    launcher = yaml.safe_load((REPO / "cluster.yaml").read_text())
    assert resources.node_types_maximum(launcher) == {"CPU": 16.0, "GPU": 4.0, "non_spot": 1000.0}


def test_the_autoscaler_maximum_falls_back_to_the_config_of_this_cluster_s_autoscaler(monkeypatch, tmp_path):
    """Ray's cluster launcher publishes no cluster config: the monitor's --autoscaling-config file, matched by GCS port, is read."""
    import types

    import ray._private.state as ray_state

    config = tmp_path / "bootstrap.yaml"
    config.write_text(yaml.safe_dump({"head_node_type": "h", "available_node_types": {
        "h": {"resources": {"CPU": 0}, "max_workers": 0}, "g": {"resources": {"CPU": 4, "GPU": 1}, "max_workers": 3}}}))
    # A process whose command line looks like the autoscaler's of a cluster on a port no real cluster uses now (a
    # local Ray that another test starts has its own monitor.py, which must not be the one found).
    ours, other = free_ports(2)
    monitor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "/x/ray/autoscaler/_private/monitor.py",
                                f"--gcs-address=127.0.0.1:{ours}", f"--autoscaling-config={config}"])
    try:
        # Right after Popen returns, /proc may not list the child yet or still show its parent's command line (seen
        # here about once in 20 runs): wait until it lists it with its own, as it long has a real autoscaler's.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
                str(monitor.pid) in {entry.name for entry in Path("/proc").iterdir()}
                and b"monitor.py" in Path(f"/proc/{monitor.pid}/cmdline").read_bytes()):
            time.sleep(0.05)
        monkeypatch.setattr(ray_state, "state", types.SimpleNamespace(get_max_resources_from_cluster_config=lambda: None))
        monkeypatch.setattr(resources.ray, "get_runtime_context", lambda: types.SimpleNamespace(gcs_address=f"127.0.0.1:{ours}"))
        assert resources.autoscaler_maximum() == {"CPU": 12.0, "GPU": 3.0}
        # Another cluster's autoscaler on this machine never counts.
        monkeypatch.setattr(resources.ray, "get_runtime_context", lambda: types.SimpleNamespace(gcs_address=f"127.0.0.1:{other}"))
        assert resources.autoscaler_maximum() == {}
        # A published cluster config comes first.
        monkeypatch.setattr(ray_state, "state", types.SimpleNamespace(get_max_resources_from_cluster_config=lambda: {"GPU": 8}))
        assert resources.autoscaler_maximum() == {"GPU": 8.0}
    finally:
        monitor.kill()
        monitor.wait()


@pytest.mark.parametrize("overrides, gpus, expected", [
    ({}, 0.0, 0.0),  # no GPUs: CPU workers
    ({}, 1.0, 0.5),  # one GPU: the two single-worker trainers share it and train at once
    ({}, 2.0, 1.0),  # a GPU per worker
    ({}, 8.0, 1.0),
    ({"workers_per_trainer": 2}, 1.0, 1.0),  # DDP ranks never share a device: whole GPUs, the trainers take turns
    ({"workers_per_trainer": 2}, 4.0, 1.0),
    ({"gpus_per_worker": 0.25}, 1.0, 0.25),  # an explicit request is kept
    ({"gpus_per_worker": 2.0}, 0.0, 2.0),
])
def test_worker_gpus_default_shares_one_gpu_between_the_two_trainers(overrides, gpus, expected):
    import dataclasses

    from stress.config import ResourceConfig

    totals = {"CPU": 16.0, **({"GPU": gpus} if gpus else {})}
    assert resources.worker_gpus(dataclasses.replace(ResourceConfig(), **overrides), totals) == expected



LOG_SETTINGS_PROBE = """
import os
{first}
from ray._private.ray_logging import LogDeduplicator

# Two workers' lines that differ only in a digit, as two folds' or two seeds' epoch lines do.
folding = LogDeduplicator(5, None, None, _timesource=lambda: 0.0)
batches = folding.deduplicate({{"ip": "10.0.0.1", "pid": 1, "lines": ["[fold1] epoch 1/2 train_loss 0.5"]}})
batches += folding.deduplicate({{"ip": "10.0.0.1", "pid": 2, "lines": ["[fold2] epoch 1/2 train_loss 0.5"]}})
print(sum(len(batch["lines"]) for batch in batches), os.environ.get("RAY_COLOR_PREFIX"))
"""


def log_settings(first: str, **env: str) -> list[str]:
    """After `first` ran in a fresh interpreter (stdout a pipe): how many of two such lines Ray's log printer shows
    at once (1 where it folds them), and RAY_COLOR_PREFIX."""
    import os

    environment = {k: v for k, v in os.environ.items() if k not in ("RAY_DEDUP_LOGS", "RAY_COLOR_PREFIX")} | env
    done = subprocess.run([sys.executable, "-c", LOG_SETTINGS_PROBE.format(first=first)], capture_output=True, text=True,
                          env=environment, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


@pytest.mark.parametrize("first", [
    "import stress.commands\nimport stress.driver.pipeline",  # the job's import path: the driver package imports Ray
    "import ray\nimport stress.driver",  # a notebook that imported Ray first
    "import ray._private.ray_constants\nimport stress.driver",  # Ray's constants read, its log printer not yet imported
])
def test_the_driver_package_turns_off_rays_log_folding_and_colour(first):
    assert log_settings(first) == ["2", "0"]


def test_planted_without_stress_ray_folds_the_lines_and_a_users_setting_wins():
    assert log_settings("import ray") == ["1", "None"]  # the probe sees the folding
    assert log_settings("import stress.driver", RAY_DEDUP_LOGS="1", RAY_COLOR_PREFIX="1") == ["1", "1"]
    assert log_settings("import ray\nimport stress.driver", RAY_DEDUP_LOGS="1") == ["1", "0"]
