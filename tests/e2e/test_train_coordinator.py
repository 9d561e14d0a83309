"""Ray Train's controllers find the autoscaling coordinator ready, so they log no warning at start-up.

Each trainer's controller sends a resource request to a detached coordinator actor and waits a fixed
time for the answer (5 s in Ray 2.60). When the first controller has to start that actor itself, a busy
machine misses the wait, and the controller logs "Failed to send resource request ..." with a traceback
into the job's log. `train_variants` starts the actor first (stress.driver.cluster.start_train_coordinator).

Here every Ray worker process sleeps START_DELAY_S when it starts, and shortens the controllers' wait to
WAIT_S: a new coordinator cannot answer in time on any machine (on two idle cores it answers in about
0.5 s without the delay), while one started and awaited before the trainers answers in milliseconds. The
planted run, without the early start, then shows the warning: the check can fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from stress.config import ExperimentConfig, merge
from stress.data import load_dataset, split_dataset
from stress.driver import cluster

pytestmark = pytest.mark.e2e

WARNING = "Failed to send resource request"
WAIT_S = 0.5
START_DELAY_S = 1.0


def slow_start_hook(delay_s: float, wait_s: float):
    """A worker_process_setup_hook: each new worker sleeps `delay_s`; the controllers wait `wait_s` for the coordinator.

    Nested, so that Ray pickles it by value: the workers cannot import this test module.
    """
    def start_slowly_and_wait_briefly() -> None:
        import time

        from ray.train.v2._internal.execution.scaling_policy import autoscaling_coordinator_client

        autoscaling_coordinator_client.AUTOSCALING_REQUESTS_GET_TIMEOUT_S = wait_s
        time.sleep(delay_s)

    return start_slowly_and_wait_briefly


def train_both_and_read_worker_logs(tmp_path: Path) -> str:
    """Train both variants for one epoch on a fresh local instance; every worker process's log, joined."""
    config = merge(ExperimentConfig(), {"data.source": "synthetic", "data.synthetic_train": 200, "data.synthetic_test": 40,
                                        "data.val_size": 40, "model.widths": (4, 8, 8), "model.hidden": 16,
                                        "train.epochs": 1, "train.batch_size": 50})
    splits = split_dataset(load_dataset(config.data), config.data, config.train.seed)
    ray.shutdown()  # a fresh instance per run: in one left running, the coordinator (detached) would already be up
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"worker_process_setup_hook": slow_start_hook(START_DELAY_S, WAIT_S)})
    try:
        finished = []
        cluster.train_variants(config, splits.arrays(), str(tmp_path / "train"), ["baseline", "augmented"],
                               lambda variant, result: finished.append(variant))
        assert sorted(finished) == ["augmented", "baseline"]
        logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
        return "\n".join(path.read_text(errors="replace") for path in sorted(logs.glob("worker-*")))
    finally:
        ray.shutdown()


def test_the_controllers_find_the_coordinator_ready_and_log_no_warning(tmp_path):
    logs = train_both_and_read_worker_logs(tmp_path)
    assert "TrainController" in logs or "RayTrainWorker" in logs  # the logs read are the trainers' own
    assert WARNING not in logs


def test_planted_without_the_early_start_the_controllers_log_the_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "start_train_coordinator", lambda: None)
    logs = train_both_and_read_worker_logs(tmp_path)
    assert WARNING in logs
