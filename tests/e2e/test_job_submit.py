"""`ray job submit` of the main job to a real local Ray head with token authentication on.

The head's dashboard listens on loopback; the head takes free ports and its own temp dir,
so it cannot collide with another Ray instance on this machine; it is started with `--block` in its own process
group and stopped by signalling that group only (never `ray stop`, which would stop every
Ray instance of the machine). It uses its own token file, not ~/.ray/auth_token.
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
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")  # the CLI of this venv, next to its python
JOB_TIMEOUT_S = float(os.environ.get("STRESS_E2E_JOB_TIMEOUT", "900"))
HEAD_START_TIMEOUT_S = 180.0
JOB_ARGS = [
    "--data", "synthetic", "--epochs", "1", "--val-size", "200", "--test-limit", "200", "--skip-stress",
]
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED")


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
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


class LocalHead:
    """A Ray head (dashboard on loopback) with token auth, in its own process group and temp dir."""

    def __init__(self, num_cpus: int = 2):
        # Short path: Ray's unix sockets live under it and paths are limited to ~107 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))
        self.token = secrets.token_hex(32)
        self.token_file = self.temp_dir / "auth_token"
        self.token_file.write_text(self.token)
        self.token_file.chmod(0o600)
        names = ("gcs", "dashboard", "client", "node_manager", "object_manager",
                 "agent_http", "agent_grpc", "runtime_env_agent", "metrics")
        self.ports = dict(zip(names, free_ports(len(names))))
        self.url = f"http://127.0.0.1:{self.ports['dashboard']}"
        self.log_path = self.temp_dir / "ray_start.log"
        self.num_cpus = num_cpus
        self.process: subprocess.Popen | None = None

    def auth_env(self) -> dict[str, str]:
        """Environment of every process that talks to this head (and of the head itself)."""
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
        return env

    def start(self) -> None:
        p = self.ports
        command = [
            str(RAY), "start", "--head", "--block",
            f"--port={p['gcs']}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={p['dashboard']}",
            f"--ray-client-server-port={p['client']}",
            f"--node-manager-port={p['node_manager']}",
            f"--object-manager-port={p['object_manager']}",
            f"--dashboard-agent-listen-port={p['agent_http']}",
            f"--dashboard-agent-grpc-port={p['agent_grpc']}",
            f"--runtime-env-agent-port={p['runtime_env_agent']}",
            f"--metrics-export-port={p['metrics']}",
            "--min-worker-port=0", "--max-worker-port=0",  # workers take random free ports
            f"--num-cpus={self.num_cpus}", "--num-gpus=0",
            "--object-store-memory=300000000",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
        ]
        with open(self.log_path, "wb") as log:
            # A new session makes the head and everything it spawns one process group.
            self.process = subprocess.Popen(
                command, env=self.auth_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.time() + HEAD_START_TIMEOUT_S
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if http_status(f"{self.url}/api/jobs/", self.token) == 200:
                    return
            except OSError:
                pass  # dashboard not listening yet
            time.sleep(1.0)
        raise RuntimeError(f"dashboard not ready after {HEAD_START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def own_pids(self) -> list[int]:
        """PIDs of processes whose command line names this head's temp dir (ours alone)."""
        marker = str(self.temp_dir).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if marker in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def stop(self, keep_temp_dir: bool = False) -> list[int]:
        """Terminate this head's process group; return PIDs that needed SIGKILL afterwards."""
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
        # Ray's processes exit shortly after `ray start --block`; give them a moment.
        leftovers = []
        for _ in range(20):
            leftovers = self.own_pids()
            if not leftovers:
                break
            time.sleep(0.5)
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not keep_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        return leftovers


def ray_cli(head: LocalHead, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(RAY), *args], env=head.auth_env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def job_status(head: LocalHead, job_id: str) -> str | None:
    """The job's status from the Jobs REST API (what `ray job status` reads), with the token."""
    request = urllib.request.Request(f"{head.url}/api/jobs/{job_id}")
    request.add_header("Authorization", f"Bearer {head.token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["status"]
    except (OSError, ValueError, KeyError):
        return None  # a busy dashboard: ask again at the next poll


def job_logs(head: LocalHead, job_id: str, lines: int = 80) -> str:
    result = ray_cli(head, "job", "logs", "--address", head.url, job_id)
    return "\n".join((result.stdout + result.stderr).splitlines()[-lines:])


def check_run_folder(run: Path) -> dict:
    """The artifact set of a finished run; returns summary.json."""
    for name in ("config.json", "manifest.json", "summary.json", "split.json"):
        assert (run / name).is_file(), f"{name} missing in {run}"
        json.loads((run / name).read_text())
    assert sorted(p.name for p in (run / "stages").glob("*.json")), "no stage records"
    for variant in ("baseline", "augmented"):
        folder = run / "variants" / variant
        assert (folder / "model.pt").stat().st_size > 0
        history = json.loads((folder / "history.json").read_text())
        assert len(history["epochs"]) == 1
    assert any(p.is_file() for p in (run / "eval").rglob("*")), "eval/ is empty"
    figures = sorted((run / "figures").glob("*.png"))
    assert figures, "no figures"
    for figure in figures:
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
    summary = json.loads((run / "summary.json").read_text())
    for variant in ("baseline", "augmented"):
        accuracy = summary["variants"][variant]["test_acc"]
        assert isinstance(accuracy, float) and 0.0 <= accuracy <= 1.0
    assert summary["dataset"]["test"] == 200
    return summary


def test_working_dir_upload_is_small_and_leaves_out_local_state(tmp_path):
    """What `--working-dir <repo>` uploads, packed by Ray's own packaging code."""
    from ray._private.runtime_env.packaging import create_package

    package = tmp_path / "working_dir.zip"
    create_package(str(ROOT), package, include_gitignore=True)
    names = zipfile.ZipFile(package).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert "jobs" in top_level and "stress" in top_level
    assert not top_level & {".venv", "runs", "data", ".pytest_cache"}, sorted(top_level)
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__/" in n]
    assert package.stat().st_size < 5 * 2**20, package.stat().st_size
    print(f"\nworking dir upload: {package.stat().st_size / 1024:.0f} KiB, {len(names)} files")


@pytest.mark.e2e
def test_job_submit_to_a_local_head_with_token_auth(tmp_path):
    started = time.perf_counter()
    head = LocalHead(num_cpus=2)
    succeeded = False
    try:
        head.start()
        print(f"\nhead up at {head.url} in {time.perf_counter() - started:.0f} s (temp dir {head.temp_dir})")

        # Token auth is really on: no token -> 401, a wrong token -> 403.
        assert http_status(f"{head.url}/api/jobs/", None) == 401
        assert http_status(f"{head.url}/api/jobs/", "0" * 64) == 403

        out = tmp_path / "runs"
        job_id = f"stress_e2e_{secrets.token_hex(4)}"
        submitted = ray_cli(
            head, "job", "submit", "--address", head.url, "--working-dir", str(ROOT),
            "--submission-id", job_id, "--no-wait", "--",
            sys.executable, "jobs/stress_test.py", *JOB_ARGS, "--out", str(out), "--run-name", "submitted",
        )
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        print(f"submitted {job_id} after {time.perf_counter() - started:.0f} s")

        deadline = time.time() + JOB_TIMEOUT_S
        status = None
        while time.time() < deadline:
            status = job_status(head, job_id)
            if status in TERMINAL_STATES:
                break
            time.sleep(10)
        if status != "SUCCEEDED":
            logs = job_logs(head, job_id)
            if status not in TERMINAL_STATES:
                ray_cli(head, "job", "stop", "--address", head.url, "--no-wait", job_id)
            pytest.fail(f"job {job_id} ended as {status} (timeout {JOB_TIMEOUT_S:.0f} s); last log lines:\n{logs}")
        print(f"job SUCCEEDED after {time.perf_counter() - started:.0f} s")
        # The CLI reads the same status through the same token.
        cli_status = ray_cli(head, "job", "status", "--address", head.url, job_id)
        assert f"Job '{job_id}' succeeded" in cli_status.stdout + cli_status.stderr, cli_status.stderr
        logs = job_logs(head, job_id, lines=100_000)
        print(f"job log: {len(logs.splitlines())} lines, {logs.count('Traceback')} tracebacks")

        summary = check_run_folder(out / "submitted")
        print("test_acc:", {v: round(s["test_acc"], 3) for v, s in summary["variants"].items()})
        succeeded = True
    finally:
        leftovers = head.stop(keep_temp_dir=not succeeded)
        if not succeeded:
            print(f"head log and session kept in {head.temp_dir}:\n{head.log_tail()}")
    assert not head.own_pids(), "processes of the test's head survived"
    print(f"total {time.perf_counter() - started:.0f} s; processes that needed SIGKILL after the group stop: {leftovers}")
