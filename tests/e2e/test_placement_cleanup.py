"""When one trainer fails, the other is cancelled and its placement group does not outlive it.

The job's local Ray instance runs its dashboard on loopback (stress.driver.connection.connect), so
Ray Train's placement-group cleaner can ask the state API whether a trainer's controller is
alive. The planted case starts Ray the old way, without a dashboard: the same failure then
leaves the cancelled trainer's reservation held, which shows the check can fail.
"""

from __future__ import annotations

import time

import pytest
import ray

from stress.config import ExperimentConfig, merge
from stress.data import load_dataset, split_dataset
from stress.driver import cluster
from stress.errors import StressError

pytestmark = pytest.mark.e2e


def trainers_config() -> ExperimentConfig:
    # Long enough that the good trainer is still training when the other one fails.
    return merge(ExperimentConfig(), {"data.source": "synthetic", "data.synthetic_train": 240, "data.synthetic_test": 40,
                                      "data.val_size": 40, "model.widths": (4, 8, 8), "model.hidden": 16,
                                      "train.epochs": 500, "train.batch_size": 60, "resources.max_failures": 0})


def fail_one_trainer(tmp_path) -> None:
    """Train 'baseline' and a variant that raises at once; the failure cancels the baseline's trainer."""
    config = trainers_config()
    splits = split_dataset(load_dataset(config.data), config.data, config.train.seed)
    with pytest.raises(StressError, match="training of broken failed"):
        cluster.train_variants(config, splits.arrays(), str(tmp_path / "train"), ["baseline", "broken"], lambda v, r: None)


def reservations_left() -> tuple[list[str], float]:
    """Placement groups not removed, and CPUs not available, right now."""
    left = [pg for pg, info in ray.util.placement_group_table().items() if info["state"] != "REMOVED"]
    return left, ray.cluster_resources()["CPU"] - ray.available_resources().get("CPU", 0.0)


def wait_until_free(timeout: float) -> tuple[list[str], float]:
    deadline = time.monotonic() + timeout
    while True:
        left, held = reservations_left()
        if (not left and held == 0) or time.monotonic() > deadline:
            return left, held
        time.sleep(1.0)


@pytest.fixture
def fresh_ray():
    ray.shutdown()
    yield
    ray.shutdown()


def test_after_a_trainer_fails_no_placement_group_is_left_and_every_cpu_is_free(tmp_path, fresh_ray):
    cluster.connect(None, num_cpus=2)
    fail_one_trainer(tmp_path)
    left, held = wait_until_free(timeout=60)
    assert left == [] and held == 0


def test_without_a_dashboard_the_cancelled_trainers_reservation_stays_held(tmp_path, fresh_ray):
    """Planted: Ray's cleaner cannot reach a state API, so the check above would fail."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    fail_one_trainer(tmp_path)
    left, held = wait_until_free(timeout=20)
    assert left and held >= 1
