"""`ray job submit` of the main job to a real local Ray head with token authentication on.

The head (see ray_head.py) has its dashboard on loopback, free ports, its own temp dir and
token file, and runs in its own process group: it cannot collide with another Ray instance
on this machine, and stopping it never touches one (no `ray stop`).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from ray_head import RAY, RayHead, http_status

ROOT = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_S = float(os.environ.get("STRESS_E2E_JOB_TIMEOUT", "900"))
JOB_ARGS = [
    "--data", "synthetic", "--epochs", "1", "--val-size", "200", "--test-limit", "200", "--skip-stress", "--faithfulness-images", "20",
]
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED")


def ray_cli(head: RayHead, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(RAY), *args], env=head.env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def job_status(head: RayHead, job_id: str) -> str | None:
    """The job's status from the Jobs REST API (what `ray job status` reads), with the token."""
    request = urllib.request.Request(f"{head.url}/api/jobs/{job_id}")
    request.add_header("Authorization", f"Bearer {head.token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["status"]
    except (OSError, ValueError, KeyError):
        return None  # a busy dashboard: ask again at the next poll


def job_logs(head: RayHead, job_id: str, lines: int = 80) -> str:
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
    assert not top_level & {".git", "docs", ".venv", "runs", "data", ".pytest_cache"}, sorted(top_level)
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__/" in n]
    # Every module of the package goes up: an ignore pattern such as `data/` matches stress/data/ too.
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "stress").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules and not modules - set(names), sorted(modules - set(names))
    assert package.stat().st_size < 5 * 2**20, package.stat().st_size
    print(f"\nworking dir upload: {package.stat().st_size / 1024:.0f} KiB, {len(names)} files")


@pytest.mark.e2e
def test_job_submit_to_a_local_head_with_token_auth(tmp_path):
    started = time.perf_counter()
    head = RayHead(num_cpus=2, prefix="rj")
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
        from log_lines import sort_lines

        own, explained, unexplained = sort_lines(logs)
        print(f"job log lines: {sum(own.values())} the project's own, explained {dict(explained)}")
        assert unexplained == [], "lines of `ray job logs` that no one explains:\n" + "\n".join(unexplained[:40])
        assert sum(explained.values()) <= 8

        summary = check_run_folder(out / "submitted")
        print("test_acc:", {v: round(s["test_acc"], 3) for v, s in summary["variants"].items()})
        succeeded = True
    finally:
        leftovers = head.stop(keep_temp_dir=not succeeded)
        if not succeeded:
            print(f"head log and session kept in {head.temp_dir}:\n{head.log_tail()}")
    assert not head.own_pids(), "processes of the test's head survived"
    print(f"total {time.perf_counter() - started:.0f} s; processes that needed SIGKILL after the group stop: {leftovers}")
