"""The main job on a multi-node Ray cluster on one machine, losing a node during training and another during the fan-out.

The cluster is a CPU-only head with no CPU for work (`num_cpus=0`, the `non_spot` resource, as in
cluster.yaml) and two 2-CPU worker nodes, each a `ray start --address=HEAD --block` on loopback with
its own ports and temp dir (see ray_head.py). The job joins it through RAY_ADDRESS, as a submitted
job's driver does. A node is lost as a machine is: every process of it SIGKILLed at once.

1. During training, once both trainers have a registered checkpoint, the node that runs a training
   worker is killed. Ray Train restarts that trainer's worker group on the remaining node from its
   last checkpoint; the other trainer, if it ran elsewhere, carries on undisturbed.
2. A replacement node joins (as an autoscaler's would). During the evaluation fan-out, a node that
   runs an evaluation task is killed; its tasks are retried on the node left.
3. Nothing is lost or counted twice: each trainer's history has every epoch once; each model's merged
   predictions cover every test image once and equal one in-process pass over the whole test set with
   the saved weights; the trainers' own test accuracy (measured inside Ray Train) equals the fan-out's.

Only processes of this test's nodes are stopped (their `ray start` sessions and temp dirs), never `ray stop`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ray_head import RayHead, RayWorkerNode

from stress.config import ExperimentConfig
from stress.data import load_dataset, split_dataset
from stress.driver.stages import load_weights
from stress.artifacts import RunFolder
from stress.evaluate.shards import evaluate_shard

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "jobs" / "stress_test.py"
EPOCHS = 6
TEST_IMAGES, SHARDS = 400, 4
VARIANTS = ("baseline", "augmented")
ARGS = [
    "--data", "synthetic", "--val-size", "200", "--test-limit", str(TEST_IMAGES), "--shards", str(SHARDS),
    "--epochs", str(EPOCHS), "--max-failures", "2", "--faithfulness-images", "20",
    "--stress-limit", "200", "--corruptions", "gaussian_noise,contrast", "--severities", "1,5",
    "--fourier-images", "0", "--texture-images", "0", "--adversarial-images", "0", "--node-wait", "120",
]
# Ray notices a node whose raylet stopped answering after period x threshold (defaults: 3 s x 5 heartbeats).
FAST_HEALTH_CHECK = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}


def wait_for(condition, timeout: float, job: subprocess.Popen, poll: float = 0.1) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and job.poll() is None:
        if condition():
            return True
        time.sleep(poll)
    return bool(condition())


def registered_checkpoint(run: Path, variant: str) -> bool:
    """Ray Train has registered a checkpoint of `variant` (a restart would resume from it), and the trainer is not done."""
    train = run / "train" / variant
    return ((train / "checkpoint_manager_snapshot.json").is_file() and any(train.glob("checkpoint_*/state.pt"))
            and not (run / "variants" / variant / "history.json").is_file())


def variants_on(node: RayWorkerNode) -> set[str]:
    """The variants whose training epochs this node's worker processes printed (Ray writes each worker's stdout there)."""
    text = "".join(p.read_text(errors="replace") for p in node.temp_dir.glob("session_*/logs/worker-*.out"))
    return {v for v in VARIANTS if f"[{v}] epoch" in text}


def finished_tasks(log: Path, stage: str) -> int:
    """How many of `stage`'s fan-out tasks the job reported done so far."""
    text = log.read_text(errors="replace")
    if f"{stage}:" not in text:
        return 0
    return len(re.findall(r"^\s+\[\d+/\d+\] \S+ done", text.split(f"{stage}:", 1)[1].split("\nslices:", 1)[0], flags=re.M))


@pytest.mark.e2e
def test_a_node_lost_in_training_and_one_lost_in_the_fan_out_cost_nothing(tmp_path):
    head = RayHead(num_cpus=0, prefix="mh", object_store_bytes=200_000_000, resources={"non_spot": 1},
                   extra_env=FAST_HEALTH_CHECK)
    nodes: list[RayWorkerNode] = []
    job = None
    log = tmp_path / "job.log"
    out, run = tmp_path / "runs", tmp_path / "runs" / "multinode"
    try:
        head.start()
        for i in range(2):
            nodes.append(RayWorkerNode(head, num_cpus=2, prefix=f"mw{i}"))
            nodes[-1].start()
        with open(log, "wb") as handle:
            job = subprocess.Popen([sys.executable, str(JOB), *ARGS, "--out", str(out), "--run-name", "multinode"],
                                   env=head.env() | {"RAY_ADDRESS": head.address}, cwd=REPO,
                                   stdout=handle, stderr=subprocess.STDOUT)

        # 1. A node lost in training.
        def training_victim() -> RayWorkerNode | None:
            if not all(registered_checkpoint(run, v) for v in VARIANTS):
                return None
            return next((n for n in nodes if n.runs("ray::RayTrainWorker") and variants_on(n)), None)

        assert wait_for(lambda: training_victim() is not None, 600, job), f"no kill window in training:\n{log.read_text()[-3000:]}"
        victim = training_victim()
        lost = variants_on(victim)
        victim.kill()
        nodes.remove(victim)
        print(f"\nkilled the node training {sorted(lost)}")

        # 2. A replacement node, then a node lost in the evaluation fan-out.
        assert wait_for(lambda: "evaluate:" in log.read_text(errors="replace"), 600, job), log.read_text()[-3000:]
        nodes.append(RayWorkerNode(head, num_cpus=2, prefix="mw2"))
        nodes[-1].start()
        assert wait_for(lambda: any(n.runs("ray::evaluate_shard") for n in nodes), 300, job, poll=0.05), log.read_text()[-3000:]
        victim = next(n for n in nodes if n.runs("ray::evaluate_shard"))
        done_before = finished_tasks(log, "evaluate")
        victim.kill()
        nodes.remove(victim)
        print(f"killed a node running evaluation tasks ({done_before} of {2 * SHARDS} done)")
        assert done_before < 2 * SHARDS

        returncode = job.wait(timeout=900)
        text = log.read_text(errors="replace")
        assert returncode == 0, text[-4000:]
    finally:
        if job is not None and job.poll() is None:
            job.kill()
            job.wait(timeout=30)
        for node in nodes:
            node.stop()
        head.stop()
    assert not head.own_pids() and not any(n.own_pids() for n in nodes), "processes of the test's cluster survived"

    # The lost trainer(s) resumed from a checkpoint, not from scratch; the other did not restart.
    for v in VARIANTS:
        resumed = re.findall(rf"\[{v}\] resuming after epoch (\d+)", text)
        if v in lost:
            assert resumed and 1 <= int(resumed[0]) < EPOCHS, (v, resumed, text[-4000:])
        else:
            assert not resumed, (v, resumed)
        history = json.loads((run / "variants" / v / "history.json").read_text())
        assert [e["epoch"] for e in history["epochs"]] == list(range(1, EPOCHS + 1))  # each epoch once

    # The evaluation fan-out: every test image once, equal to one in-process pass with the saved weights.
    config = ExperimentConfig.from_dict(json.loads((run / "config.json").read_text()))
    splits = split_dataset(load_dataset(config.data), config.data, config.train.seed)
    weights = load_weights(RunFolder(run), config.to_dict()["model"])
    with np.load(run / "eval" / "predictions.npz") as merged:
        for v in VARIANTS:
            np.testing.assert_array_equal(merged[f"{v}_indices"], np.arange(TEST_IMAGES))
            reference = evaluate_shard(weights[v], config.to_dict()["model"], splits.test_x, splits.test_y, 0, TEST_IMAGES, gradcam=False)
            np.testing.assert_array_equal(merged[f"{v}_predicted"], reference["predicted"])
            np.testing.assert_allclose(merged[f"{v}_logits"], reference["logits"], rtol=1e-5, atol=1e-5)
            history = json.loads((run / "variants" / v / "history.json").read_text())
            assert merged[f"{v}_correct"].mean() == pytest.approx(history["test"]["acc"], abs=1e-6)  # a float32 mean in training
    summary = json.loads((run / "summary.json").read_text())
    assert sorted(summary["variants"]) == sorted(VARIANTS)
