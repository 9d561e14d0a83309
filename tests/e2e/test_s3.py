"""The main job with --out s3://… against a real S3 API on loopback (moto's server), interrupted and resumed.

Everything that touches the bucket goes through S3's HTTP API: the driver's mirror of the run
folder (pyarrow.fs), and Ray Train's workers, which write their checkpoints to the URI directly.
The job's processes reach the server through AWS_ENDPOINT_URL, as a user's would reach MinIO or
any S3-compatible store. The local staging folder is deleted between the runs, so the resume
can only come from the bucket.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

from stress.constants import VARIANTS  # noqa: E402
from stress.storage import staging_folder  # noqa: E402

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "jobs" / "stress_test.py"
BUCKET, PREFIX, RUN = "stress", "runs", "s3run"
ARGS = ["--data", "synthetic", "--epochs", "4", "--val-size", "200", "--test-limit", "200", "--shards", "2",
        "--faithfulness-images", "20", "--stress-limit", "50", "--corruptions", "gaussian_noise", "--severities", "1",
        "--texture-images", "20", "--adversarial-images", "0", "--fourier-images", "10",
        "--out", f"s3://{BUCKET}/{PREFIX}", "--run-name", RUN]


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free loopback port with an empty bucket: (client, environment for the jobs)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env.update(credentials, AWS_ENDPOINT_URL=endpoint, AWS_EC2_METADATA_DISABLED="true", RAY_USAGE_STATS_ENABLED="0")
    yield client, env
    server.stop()


def keys(client, prefix: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def recorded_checkpoint(client, trainer: str) -> bool:
    """Whether Ray Train's checkpoint-manager snapshot under `trainer` names a checkpoint whose files are uploaded."""
    body = client.get_object(Bucket=BUCKET, Key=f"{trainer}/checkpoint_manager_snapshot.json")["Body"].read()
    latest = json.loads(body).get("latest_checkpoint_result")
    if not latest:
        return False
    return any(k.startswith(f"{trainer}/{latest['checkpoint_dir_name']}/") for k in keys(client, f"{trainer}/"))


def holds(condition) -> bool:
    """condition(), with a listing that fails (the server busy with the job's uploads) read as "not yet"."""
    try:
        return bool(condition())
    except Exception:  # noqa: BLE001 - botocore's connection and read errors
        return False


def wait_for(condition, timeout: float, process: subprocess.Popen) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if holds(condition):
            return True
        if process.poll() is not None:
            return holds(condition)
        time.sleep(0.5)
    return False


def test_the_main_job_writes_to_s3_is_interrupted_and_resumes_from_the_bucket(s3, tmp_path):
    client, env = s3
    run = f"{PREFIX}/{RUN}"
    staging = staging_folder(ARGS[ARGS.index("--out") + 1], RUN)
    shutil.rmtree(staging, ignore_errors=True)  # a staging folder left by an earlier test run would be resumed
    first_log = tmp_path / "first.log"
    with open(first_log, "wb") as handle:
        job = subprocess.Popen([sys.executable, str(JOB), *ARGS], env=env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    try:
        # Ray Train's workers write checkpoints to the bucket themselves, and its controller then records
        # them in a snapshot; a resume finds only recorded ones: wait for one of each trainer.
        checkpointed = lambda: all(recorded_checkpoint(client, f"{run}/train/{v}") for v in VARIANTS)  # noqa: E731
        assert wait_for(checkpointed, 400, job), (f"no recorded checkpoints in the bucket: {sorted(keys(client, ''))[:40]}\n"
                                                  f"{first_log.read_text()[-1500:]}")
        assert job.poll() is None, "the job finished before it could be interrupted"
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=120) == 130, first_log.read_text()[-3000:]
    finally:
        if job.poll() is None:
            job.kill()
    assert f"{run}/stages/train_baseline.json" not in keys(client, run)  # interrupted during training
    shutil.rmtree(staging, ignore_errors=True)  # nothing local is left to resume from

    resumed = subprocess.run([sys.executable, str(JOB), *ARGS], env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert f"resuming s3://{BUCKET}/{run}" in log
    for v in VARIANTS:
        assert f"[{v}] resuming after epoch" in log, log[-3000:]  # from the checkpoint in the bucket
    there = keys(client, run)
    for name in ("summary.json", "report.html", "manifest.json", "stages/train_baseline.json", "stages/evaluate.json",
                 "stages/stress.json", "variants/augmented/model.pt", "eval/robustness.json"):
        assert f"{run}/{name}" in there, name
    assert not any(k.endswith(".tmp") for k in there)
    summary = json.loads(client.get_object(Bucket=BUCKET, Key=f"{run}/summary.json")["Body"].read())
    assert summary["run"]["folder"] == f"s3://{BUCKET}/{run}"
    assert all(summary["variants"][v]["epochs"] == 4 for v in VARIANTS)  # the resumed trainings completed their epochs


SWEEP = REPO / "jobs" / "seed_sweep.py"
SWEEP_ARGS = ["--data", "synthetic", "--epochs", "1", "--val-size", "200", "--test-limit", "100", "--shards", "1",
              "--faithfulness-images", "10", "--skip-stress", "--seeds", "1", "--max-concurrent", "1",
              "--out", f"s3://{BUCKET}/sweeps", "--run-name", "sw"]


def test_a_sweep_writes_its_seeds_to_s3_and_resumes_from_the_bucket_alone(s3):
    """Each trial mirrors its seed folder to the bucket; the driver writes the sweep's summary and report there.

    One seed keeps it short: gathering several seeds from storage is tests/unit/driver/test_sweep.py's (file://).

    Every local staging folder is deleted before the resume, as on a fresh driver whose trials ran on other
    nodes: the resumed sweep finds Tune's experiment and the finished seeds in the bucket and trains nothing.
    """
    client, env = s3
    root, uri = "sweeps/sw", f"s3://{BUCKET}/sweeps"
    stagings = [staging_folder(uri, "sw"), staging_folder(f"{uri}/sw", "seed_1")]
    for folder in stagings:
        shutil.rmtree(folder, ignore_errors=True)
    first = subprocess.run([sys.executable, str(SWEEP), *SWEEP_ARGS], env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    log = first.stdout + first.stderr
    assert first.returncode == 0, log[-3000:]
    assert f"report: {uri}/sw/report.html" in log
    there = keys(client, root)
    for name in ("summary.json", "report.html", "stability.npz", "seed_1/summary.json", "seed_1/report.html",
                 "seed_1/variants/baseline/model.pt", "seed_1/stages/evaluate.json"):
        assert f"{root}/{name}" in there, name
    assert any(k.startswith(f"{root}/tune/attempt_1/") for k in there)  # Tune's own experiment, in the bucket too
    assert any(k.startswith(f"{root}/seed_1/train/baseline/checkpoint_") for k in there)  # Ray Train's checkpoints
    summary = json.loads(client.get_object(Bucket=BUCKET, Key=f"{root}/summary.json")["Body"].read())
    assert summary["seeds"] == [1] and set(summary["per_seed"]) == {"1"} and summary["run"]["folder"] == f"{uri}/sw"

    for folder in stagings:
        shutil.rmtree(folder, ignore_errors=True)
    resumed = subprocess.run([sys.executable, str(SWEEP), *SWEEP_ARGS, "--resume"], env=env, cwd=REPO, capture_output=True,
                             text=True, timeout=900)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert f"resuming {uri}/sw/seed_1" in log, log[-3000:]
    assert "epoch 1/1" not in log  # nothing was trained again
    assert any(k.startswith(f"{root}/tune/attempt_2/") for k in keys(client, root))
