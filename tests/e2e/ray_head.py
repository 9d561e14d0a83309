"""A real `ray start --head --block` with token authentication, for the end-to-end tests.

The head takes free ports, its own short temp dir and its own token file (not
~/.ray/auth_token), so it cannot collide with another Ray instance on this machine. Its
dashboard listens on loopback. It runs in its own process group and is stopped by
signalling that group, then by the PIDs that name its temp dir: never `ray stop`, which
would stop every Ray instance of the machine.

Imported by the test modules as `from ray_head import RayHead`: pytest's default
("prepend") import mode puts this folder, which has no __init__.py, on sys.path.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

RAY = Path(sys.executable).with_name("ray")  # the CLI of this venv, next to its python
PORT_NAMES = ("gcs", "dashboard", "client", "node_manager", "object_manager",
              "agent_http", "agent_grpc", "runtime_env_agent", "metrics")


def free_ports(count: int) -> list[int]:
    """Ports that are free on 127.0.0.1 right now; all held at once so they are distinct."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def http_status(url: str, token: str | None) -> int:
    """The HTTP status of a GET of `url`, with `token` as a bearer token when given."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def pids_naming(folder: Path) -> list[int]:
    """PIDs of the processes (not this one) whose command line or environment names `folder`."""
    marker = str(folder).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes() or marker in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def process_stats() -> dict[int, list[str]]:
    """pid -> the fields of /proc/PID/stat after "pid (comm) " (state, ppid, pgrp, session, ...; starttime is [19])."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        stats[int(entry.name)] = stat[stat.rindex(")") + 2 :].split()
    return stats


def pids_in_session(session: int) -> list[int]:
    """PIDs of the processes whose session id is `session` (a process started with start_new_session and all it spawns)."""
    return [pid for pid, fields in process_stats().items() if int(fields[3]) == session]


def node_arguments(ports: dict[str, int], num_cpus: int, object_store_bytes: int, temp_dir: Path,
                   resources: dict[str, float]) -> list[str]:
    """The `ray start` flags every node of these tests gets: its own ports, CPUs, object store and temp dir."""
    arguments = [
        f"--node-manager-port={ports['node_manager']}",
        f"--object-manager-port={ports['object_manager']}",
        f"--dashboard-agent-listen-port={ports['agent_http']}",
        f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
        f"--runtime-env-agent-port={ports['runtime_env_agent']}",
        f"--metrics-export-port={ports['metrics']}",
        "--min-worker-port=0", "--max-worker-port=0",  # workers take random free ports
        f"--num-cpus={num_cpus}", "--num-gpus=0",
        f"--object-store-memory={object_store_bytes}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    return arguments + ([f"--resources={json.dumps(resources)}"] if resources else [])


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file ("" while it does not exist)."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def end_leftovers(own_pids) -> list[int]:
    """Give a stopped node's processes 10 s to exit, then SIGKILL what `own_pids()` still lists; returns those PIDs."""
    leftovers: list[int] = []
    for _ in range(20):
        leftovers = own_pids()
        if not leftovers:
            break
        time.sleep(0.5)
    kill_pids(leftovers)
    return leftovers


def process_titles(pids: list[int]) -> dict[int, str]:
    """pid -> command line (Ray's workers show their actor or task there, e.g. "ray::RayTrainWorker")."""
    titles = {}
    for pid in pids:
        try:
            titles[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
    return titles


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class RayHead:
    """A Ray head (dashboard on loopback) with token auth, in its own process group and temp dir."""

    def __init__(self, num_cpus: int = 2, prefix: str = "rh", object_store_bytes: int = 300_000_000,
                 resources: dict[str, float] | None = None, extra_env: dict[str, str] | None = None,
                 autoscaling_config: Path | None = None):
        # Short path: Ray's unix sockets live under it and their paths are limited to ~107 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.token = secrets.token_hex(32)
        self.token_file = self.temp_dir / "auth_token"
        self.token_file.write_text(self.token)
        self.token_file.chmod(0o600)
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES))))
        self.address = f"127.0.0.1:{self.ports['gcs']}"  # for RAY_ADDRESS of a driver
        self.url = f"http://127.0.0.1:{self.ports['dashboard']}"  # jobs and state API
        self.log_path = self.temp_dir / "ray_start.log"
        self.num_cpus = num_cpus
        self.object_store_bytes = object_store_bytes
        self.resources = resources or {}
        self.extra_env = extra_env or {}
        self.autoscaling_config = autoscaling_config
        self.process: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        """Environment of the head itself and of every process that talks to it."""
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN")}
        env["RAY_AUTH_MODE"] = "token"  # clients send no token unless this is set
        env["RAY_AUTH_TOKEN_PATH"] = str(self.token_file)  # takes precedence over ~/.ray/auth_token
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        # Ray Train's PlacementGroupCleaner queries the state API without an address; with
        # several Ray instances on one machine that lookup fails ("Found multiple active Ray
        # instances"). Naming this head's API server in every process's environment fixes it.
        env["RAY_API_SERVER_ADDRESS"] = self.url
        # The job's entrypoint and Ray's workers find this venv's python first.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 180.0) -> None:
        """Start the head; return once its Jobs API answers the token, raise RuntimeError otherwise."""
        p = self.ports
        command = [
            str(RAY), "start", "--head", "--block",
            f"--port={p['gcs']}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={p['dashboard']}",
            f"--ray-client-server-port={p['client']}",
            *node_arguments(p, self.num_cpus, self.object_store_bytes, self.temp_dir, self.resources),
        ]
        if self.autoscaling_config is not None:
            command.append(f"--autoscaling-config={self.autoscaling_config}")
        with open(self.log_path, "wb") as log:
            # A new session makes the head and everything it spawns one process group.
            self.process = subprocess.Popen(
                command, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if http_status(f"{self.url}/api/jobs/", self.token) == 200:
                    return
            except OSError:
                pass  # dashboard not listening yet
            time.sleep(1.0)
        raise RuntimeError(f"dashboard not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of `ray start`'s own output."""
        return tail(self.log_path, lines)

    def own_pids(self) -> list[int]:
        """The head's processes: its `ray start` session (GCS, raylet, autoscaler and the fake nodes it starts)
        and any process whose command line or environment names its temp dir (ours alone)."""
        session = pids_in_session(self.process.pid) if self.process is not None else []
        return sorted(set(session) | set(pids_naming(self.temp_dir)))

    def stop(self, keep_temp_dir: bool = False) -> list[int]:
        """Terminate this head's process group; return the PIDs that needed SIGKILL afterwards."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=60)  # the head drains for up to 30 s first
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        # Workers may start their own sessions (outside the group) but carry the head's temp dir
        # in their environment; Ray's processes exit shortly after the head, give them a moment.
        leftovers = end_leftovers(self.own_pids)
        if not keep_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        return leftovers


class RayWorkerNode:
    """A worker node (`ray start --address=HEAD --block`) of a RayHead, on loopback with its own ports and temp dir.

    Several of them beside a head make a multi-node cluster on one machine. `kill` takes the
    node down as a lost machine would: SIGKILL to every process of the node at once (its raylet,
    agents and workers, found by the node's temp dir), with no chance to drain.
    """

    def __init__(self, head: RayHead, num_cpus: int = 2, resources: dict[str, float] | None = None, prefix: str = "rw"):
        self.head = head
        self.temp_dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.num_cpus = num_cpus
        self.resources = resources or {}
        self.log_path = self.temp_dir / "ray_start.log"
        self.process: subprocess.Popen | None = None

    # What `ray start` prints when the head's GCS did not answer its node registration in time: on two busy cores
    # (the other end-to-end file's jobs beside this one) a node joining mid-job can miss that deadline once.
    GCS_TIMEOUT = ("timed out during startup", "Deadline Exceeded")

    def start(self, attempts: int = 2) -> None:
        """Start the node; return once `ray start` says it joined (the head then lists it within seconds).

        A start that exits because the GCS did not answer in time is tried again, up to `attempts` in all.
        """
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                kill_pids(self.own_pids())  # what the failed start left of the node
                self.log_path = self.temp_dir / f"ray_start_{attempt}.log"
            names = ("node_manager", "object_manager", "agent_http", "agent_grpc", "runtime_env_agent", "metrics")
            p = dict(zip(names, free_ports(len(names))))
            command = [
                str(RAY), "start", "--block", f"--address={self.head.address}",
                *node_arguments(p, self.num_cpus, self.head.object_store_bytes, self.temp_dir, self.resources),
            ]
            with open(self.log_path, "wb") as log:
                self.process = subprocess.Popen(command, env=self.head.env(), stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)
            deadline = time.time() + 120
            while time.time() < deadline:
                if self.process.poll() is not None:
                    text = self.log_path.read_text(errors="replace")
                    if attempt < attempts and any(sign in text for sign in self.GCS_TIMEOUT):
                        break
                    raise RuntimeError(f"ray start (worker) exited with {self.process.returncode}:\n{self.log_tail()}")
                if "Ray runtime started" in self.log_path.read_text(errors="replace"):
                    return
                time.sleep(0.5)
            else:
                raise RuntimeError(f"worker node not started after 120 s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def own_pids(self) -> list[int]:
        """The node's processes: its `ray start` session (raylet, agents, workers), and any naming its temp dir."""
        session = pids_in_session(self.process.pid) if self.process is not None else []
        return sorted(set(session) | set(pids_naming(self.temp_dir)))

    def runs(self, title: str) -> bool:
        """Whether one of this node's processes has `title` in its command line (e.g. "ray::RayTrainWorker")."""
        return any(title in t for t in process_titles(self.own_pids()).values())

    def kill(self) -> None:
        """Every process of the node at once, SIGKILL: a lost machine (`ray start --block` included)."""
        kill_pids(self.own_pids())
        if self.process is not None:
            self.process.wait(timeout=30)

    def stop(self) -> list[int]:
        """Stop the node (SIGTERM to its group, then SIGKILL to what is left); returns the PIDs that needed SIGKILL."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=60)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        leftovers = end_leftovers(self.own_pids)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return leftovers
