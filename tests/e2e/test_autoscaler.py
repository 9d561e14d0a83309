"""The main job on an autoscaling cluster that starts with zero worker nodes: Ray's fake autoscaler on one machine.

The head runs `ray start --head --autoscaling-config=FILE` with RAY_FAKE_CLUSTER=1, so the
autoscaler's node provider is Ray's `fake_multinode`: it launches and removes simulated worker
nodes as local raylets. The head has no CPU for work (`CPU: 0`, the `non_spot` resource, as in
cluster.yaml). The config offers two worker types: 2-CPU `cpu_worker` nodes and a (simulated)
`gpu_worker` type. With no worker node alive:
- the job's GPU default reads the autoscaler's node types (the launcher config its monitor runs
  with), so the GPU type counts before any GPU node exists;
- the job, run with CPU trainers and tasks, asks the autoscaler for nodes, which starts `cpu_worker`
  nodes only (the type the requests need), and finishes; idle nodes are removed afterwards.

The driver joins through RAY_ADDRESS on the head's machine, as a submitted job's driver does on
the head. The fake nodes share the head's temp dir, so each line of the job's log appears once
per node's log monitor here; on a real cluster each node tails its own logs.
Only this head's processes (its session and temp dir) are stopped, never `ray stop`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ray_head import RAY, RayHead

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "jobs" / "stress_test.py"
ARGS = [
    "--data", "synthetic", "--epochs", "1", "--val-size", "200", "--test-limit", "200", "--skip-stress",
    "--faithfulness-images", "20", "--fourier-images", "0", "--texture-images", "0", "--adversarial-images", "0",
    "--node-wait", "300", "--gpus-per-worker", "0", "--task-gpus", "0",
]
PROBE = (
    "import json, ray\n"
    "ray.init(logging_level='ERROR', log_to_driver=False)\n"
    "from stress.driver.resources import autoscaler_maximum, cluster_has_gpus\n"
    "alive = ray.cluster_resources()\n"
    "print('PROBE', json.dumps({'maximum': autoscaler_maximum(), 'gpus': cluster_has_gpus(), 'alive_cpu': alive.get('CPU', 0), 'alive_gpu': alive.get('GPU', 0)}))\n"
)


def launcher_config(gcs_address: str) -> dict:
    """A cluster launcher config for Ray's fake_multinode provider (what `ray up` would hand the autoscaler)."""
    config = {
        "cluster_name": "stress-fake", "max_workers": 2, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.1,
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address, "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0, "non_spot": 1}, "node_config": {}, "max_workers": 0},
            "cpu_worker": {"resources": {"CPU": 2}, "node_config": {}, "min_workers": 0, "max_workers": 2},
            "gpu_worker": {"resources": {"CPU": 2, "GPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 1},
        },
        "head_node_type": "ray.head.default",
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }
    from ray.autoscaler._private.util import validate_config

    validate_config(config)  # Ray's own schema check, as `ray up` runs it
    return config


@pytest.mark.e2e
def test_a_job_on_a_cluster_with_zero_workers_makes_the_autoscaler_start_the_nodes_it_needs(tmp_path):
    config_file = tmp_path / "autoscaler.json"
    head = RayHead(num_cpus=0, prefix="ah", object_store_bytes=200_000_000, resources={"non_spot": 1},
                   extra_env={"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"},
                   autoscaling_config=config_file)
    config_file.write_text(json.dumps(launcher_config(head.address)))
    out, run = tmp_path / "runs", tmp_path / "runs" / "autoscaled"
    env = head.env() | {"RAY_ADDRESS": head.address}
    try:
        head.start()
        probe = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert probe.returncode == 0, probe.stderr[-2000:]
        before = json.loads(next(line for line in probe.stdout.splitlines() if line.startswith("PROBE "))[6:])
        # No worker node is alive, and the GPU default still sees the GPU type the autoscaler can start.
        assert before["alive_cpu"] == 0 and before["alive_gpu"] == 0, before
        assert before["maximum"] == {"CPU": 4.0, "GPU": 1.0, "non_spot": 1.0}, before  # at most 2 workers (max_workers): 2 x 2 CPU, or a GPU node among them
        assert before["gpus"] is True

        job = subprocess.run([sys.executable, str(JOB), *ARGS, "--out", str(out), "--run-name", "autoscaled"],
                             env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
        text = job.stdout + job.stderr
        assert job.returncode == 0, text[-4000:]
        assert "waiting up to 300 s for nodes" in text and "nodes are there: starting" in text
        launched = set(re.findall(r"Adding \d+ node\(s\) of type (\S+)\.", text))
        assert launched == {"cpu_worker"}, launched  # the type the CPU requests need; never the GPU type
        assert (run / "summary.json").is_file()
        for variant in ("baseline", "augmented"):
            assert json.loads((run / "variants" / variant / "history.json").read_text())["epochs"]

        status = subprocess.run([str(RAY), "status", "--address", head.address], env=env, capture_output=True, text=True, timeout=120)
        assert "ray.head.default" in status.stdout, status.stdout + status.stderr
    finally:
        leftovers = head.stop()
    assert not head.own_pids(), "processes of the test's cluster survived"
    print(f"\nautoscaler launched {sorted(launched)}; SIGKILL needed for {len(leftovers)} process(es) at stop")
