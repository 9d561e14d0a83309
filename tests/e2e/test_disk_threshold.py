"""A local instance on a disk over Ray's spill threshold logs one line of the job's, not Ray's error every 10 s.

The disk of this machine is rarely nearly full, so the test sets Ray's threshold under the share
in use now (RAY_local_fs_capacity_threshold=0.01), as a CI machine with 9 GB free of 252 GB was.
The planted case starts the same local instance without the raised threshold: then the raylet's
file_system_monitor line reaches the driver's log, which shows that the check can fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
# Start a local instance the job's way, keep it up past the raylet's first disk checks, and print what reached the log.
SCRIPT = """
import sys, time
import ray
from stress.driver import connection
if sys.argv[1] == "planted":
    connection._disk_environment = lambda log: {}
connection.connect(None, num_cpus=1, log=print)
ray.get(ray.remote(lambda: 1).remote())
time.sleep(14)
ray.shutdown()
"""


def local_instance_log(mode: str):
    from log_lines import sort_lines

    temp = tempfile.mkdtemp(prefix="rd", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    env = {**os.environ, "RAY_local_fs_capacity_threshold": "0.01", "RAY_TMPDIR": temp}
    env.pop("RAY_ADDRESS", None)
    try:
        result = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=180)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-2000:]
    own, explained, unexplained = sort_lines(result.stdout + result.stderr)
    return own, explained, unexplained, result.stdout


def test_a_nearly_full_disk_gives_one_line_and_no_raylet_errors():
    own, explained, unexplained, stdout = local_instance_log("job")
    assert unexplained == [] and explained == {}
    assert own == {r"^disk: ": 1}
    assert "Ray's spill limit for this local instance raised from 1% to " in stdout


def test_planted_without_the_raised_threshold_the_raylet_repeats_its_error():
    own, explained, unexplained, _ = local_instance_log("planted")
    assert explained["raylet: disk nearly full"] >= 1 and unexplained == []
    assert r"^disk: " not in own
