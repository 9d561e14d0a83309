"""Fault injection: lost fan-out tasks, a killed training worker, an interrupted job, bad data.

Every process these tests stop is one they started or found themselves by PID (its
parent chain, its Ray session's log files, or the state API of a head they started):
other Ray instances may run on the same machine and are never touched. No `ray stop`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ray_head import RayHead, process_stats

from stress.config import ModelConfig, ResourceConfig
from stress.driver.fanout import merge_shards, shard_bounds
from stress.errors import StressError
from stress.evaluate.shards import evaluate_shard
from stress.models import create_model

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "jobs" / "stress_test.py"
SMALL = [
    "--data", "synthetic", "--val-size", "200", "--test-limit", "200", "--skip-stress",
    "--faithfulness-images", "20", "--shards", "2",
]
INTERRUPT_MESSAGE = re.compile(r"interrupted: saved stage\(s\) (train_augmented, train_baseline|evaluate, train_augmented, train_baseline) in \S+; re-run the same command to resume")
VARIANTS = ("baseline", "augmented")
# What each stage record promises: the stage's files, all written before its record.
STAGE_OUTPUTS = {
    "train_baseline": ["variants/baseline/model.pt", "variants/baseline/history.json"],
    "train_augmented": ["variants/augmented/model.pt", "variants/augmented/history.json"],
    "evaluate": ["eval/predictions.npz", "eval/predictions.csv", "eval/characteristics.npz", "eval/gradcam_cases.npz",
                 "eval/failure_gallery.npz", "eval/failures.json", "eval/explanations.json", "eval/labels.json", "eval/labels.npz"],
    "slices": ["eval/slices.json", "eval/slices.npz"],
    "train_audit": ["eval/train_labels.json", "eval/train_labels.npz"],
    "stress": ["eval/stress_correct.npz", "eval/robustness.json", "eval/calibration.json"],
    "browser": ["eval/browser.npz"],
}


# -- helpers: processes ---------------------------------------------------------------
def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time in clock ticks) of every process we can read."""
    return {pid: (int(fields[1]), fields[19]) for pid, fields in process_stats().items()}


def descendants(root: int) -> dict[int, str]:
    """Every live descendant of `root`: pid -> start time (to tell a reused PID apart)."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = table[child][1]
                todo.append(child)
    return found


def still_alive(processes: dict[int, str]) -> list[int]:
    """The processes of a snapshot that still run (same PID and same start time)."""
    table = _process_table()
    return sorted(pid for pid, start in processes.items() if pid in table and table[pid][1] == start)


def kill_all(processes: dict[int, str]) -> None:
    for pid in still_alive(processes):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def local_env() -> dict[str, str]:
    """The job's environment for a fresh local Ray (never a cluster named in RAY_ADDRESS)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def start_job(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as handle:
        return subprocess.Popen([sys.executable, str(JOB), *args], env=env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)


def run_job(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(JOB), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def wait_for(condition, timeout: float, process: subprocess.Popen | None = None, poll: float = 0.25) -> bool:
    """Poll `condition()` until true; False on timeout or when `process` exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        if process is not None and process.poll() is not None:
            return bool(condition())
        time.sleep(poll)
    return False


# -- helpers: the run folder ----------------------------------------------------------
def check_nothing_half_written(root: Path) -> list[Path]:
    """Walk a run folder: no temporary files, every JSON/npz/pt file reads completely. Returns the files."""
    from stress.artifacts import load_torch

    files = sorted(p for p in root.rglob("*") if p.is_file())
    leftovers = [p for p in files if p.name.endswith(".tmp") or ".tmp" in p.suffixes]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    for path in files:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".npz":
            with np.load(path) as archive:
                for name in archive.files:
                    archive[name]  # decompresses: a truncated member raises
        elif path.suffix == ".pt" and "variants" in path.parts:
            load_torch(path)
        elif path.suffix == ".csv":
            lines = path.read_text().splitlines()
            assert len({line.count(",") for line in lines}) == 1, f"{path}: ragged rows"
    return files


def check_stage_records(root: Path) -> set[str]:
    """Every stage record names a known stage whose files all exist; returns the recorded stages."""
    recorded = set()
    for record_path in sorted((root / "stages").glob("*")):
        record = json.loads(record_path.read_text())
        name = record_path.stem
        assert record_path.suffix == ".json" and record["stage"] == name, record_path
        assert name in STAGE_OUTPUTS, f"unknown stage record {record_path.name}"
        missing = [f for f in STAGE_OUTPUTS[name] if not (root / f).is_file()]
        assert not missing, f"stage {name} recorded but {missing} missing"
        recorded.add(name)
    return recorded


def folder_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


# -- 1. a fan-out task whose worker process dies ----------------------------------------
MODEL = ModelConfig(widths=(8, 16, 32), hidden=32)
N_IMAGES = 40


def crashing_evaluate_shard(marker: str, crash_start: int, *args, **kwargs):
    """evaluate_shard, except that the first attempt at the shard starting at `crash_start`
    kills its own worker process, as an out-of-memory kill or a lost node would."""
    start = args[4]
    with open(f"{marker}.attempts", "a") as log:
        log.write(f"{start} {os.getpid()}\n")
    if start == crash_start and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os._exit(1)
    return evaluate_shard(*args, **kwargs)


@pytest.fixture(scope="module")
def shard_inputs():
    torch.manual_seed(0)
    weights = create_model(MODEL).state_dict()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(N_IMAGES, 3, 32, 32), dtype=np.uint8)  # (N, 3, H, W)
    labels = rng.integers(0, 10, size=N_IMAGES).astype(np.int64)
    return weights, dataclasses.asdict(MODEL), images, labels


@pytest.fixture(scope="class")
def local_ray():
    """An in-process local Ray for the class's tests only (shut down before the job tests start)."""
    import ray

    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this test process")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    # The tasks run a function of this test module, which Ray workers cannot import by name.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


@pytest.mark.e2e
class TestTaskLoss:

    def run_with_crash(self, ray, inputs, marker: Path, crash_start: int, retries: int, shards: int = 3) -> dict:
        from stress.driver import cluster

        weights, model_config, images, labels = inputs
        refs = [ray.put(weights), ray.put(images), ray.put(labels)]
        calls = [
            (f"baseline:{start}-{stop}", (str(marker), crash_start, refs[0], model_config, refs[1], refs[2], start, stop), {})
            for start, stop in shard_bounds(N_IMAGES, shards)
        ]
        results: dict[str, dict] = {}
        resources = ResourceConfig(task_cpus=1, task_gpus=0, task_retries=retries)
        cluster.run_tasks(crashing_evaluate_shard, calls, resources, results.__setitem__, progress=lambda line: None)
        return results

    def test_a_killed_task_is_retried_and_merged_exactly_once(self, local_ray, shard_inputs, tmp_path):
        marker = tmp_path / "crashed"
        crash_start = shard_bounds(N_IMAGES, 3)[1][0]
        results = self.run_with_crash(local_ray, shard_inputs, marker, crash_start, retries=2)

        assert marker.is_file(), "the fault was never injected"
        attempts = [line.split() for line in Path(f"{marker}.attempts").read_text().splitlines()]
        crashed = [pid for start, pid in attempts if int(start) == crash_start]
        assert len(crashed) == 2 and crashed[0] == marker.read_text() != crashed[1], attempts  # retried in a new process
        assert sorted(results) == [f"baseline:{a}-{b}" for a, b in shard_bounds(N_IMAGES, 3)]

        merged = merge_shards(list(results.values()), N_IMAGES)
        np.testing.assert_array_equal(merged["indices"], np.arange(N_IMAGES))  # each image exactly once
        weights, model_config, images, labels = shard_inputs
        reference = evaluate_shard(weights, model_config, images, labels, 0, N_IMAGES)  # fault-free, in process
        np.testing.assert_array_equal(merged["predicted"], reference["predicted"])
        np.testing.assert_array_equal(merged["correct"], reference["correct"])
        np.testing.assert_allclose(merged["logits"], reference["logits"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(merged["confidence"], reference["confidence"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(merged["centre_share_true"], reference["centre_share_true"], rtol=1e-4, atol=1e-5)

    def test_without_retries_the_lost_task_is_a_one_line_error_naming_it(self, local_ray, shard_inputs, tmp_path):
        marker = tmp_path / "crashed"
        crash_start = shard_bounds(N_IMAGES, 2)[1][0]
        with pytest.raises(StressError) as error:
            self.run_with_crash(local_ray, shard_inputs, marker, crash_start, retries=0, shards=2)
        message = str(error.value)
        assert f"task baseline:{crash_start}-{N_IMAGES} failed after retries" in message
        assert "\n" not in message
        assert marker.is_file()


# -- 2. a training worker killed mid-run, on a real `ray start` head ---------------------
def train_worker_pids(head: RayHead) -> tuple[list[int], str]:
    """PIDs of the ALIVE RayTrainWorker actors, from the head's state API (in a subprocess,
    so this test process keeps no Ray client state and no token in its environment), and the
    query's error output: ([], stderr) where the query failed. On two busy cores the head's
    dashboard has been seen to refuse connections for a while just after it first answered
    (end-to-end tests three at a time), so the caller asks again until its deadline."""
    script = (
        "import json, sys\n"
        "from ray.util.state import list_actors\n"
        "actors = list_actors(address=sys.argv[1], filters=[('class_name', '=', 'RayTrainWorker'), ('state', '=', 'ALIVE')],"
        " detail=True, raise_on_missing_output=False)\n"
        "print(json.dumps([a.pid for a in actors]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, head.url], env=head.env(), capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        return [], result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), ""


def worker_log(head: RayHead, pid: int) -> str:
    """stdout of the head's Ray worker process `pid` (Ray names the file worker-<id>-<job>-<pid>.out)."""
    texts = []
    for path in head.temp_dir.glob(f"session_*/logs/worker-*-{pid}.out"):
        try:
            texts.append(path.read_text(errors="replace"))
        except FileNotFoundError:  # Ray can remove a log between the listing and the read: it holds no epoch line then
            pass
    return "".join(texts)


def baseline_checkpointed(run: Path) -> bool:
    """The baseline trainer registered at least one checkpoint (file written and snapshot recorded)."""
    train = run / "train" / "baseline"
    return (train / "checkpoint_manager_snapshot.json").is_file() and any(train.glob("checkpoint_*/state.pt"))


@pytest.mark.e2e
def test_training_resumes_from_its_checkpoint_after_a_worker_is_killed(tmp_path):
    head = RayHead(num_cpus=2, prefix="rf", object_store_bytes=200_000_000)
    job = None
    log = tmp_path / "job.log"
    try:
        head.start()
        env = head.env() | {"RAY_ADDRESS": head.address}
        out, run = tmp_path / "runs", tmp_path / "runs" / "killed"
        args = [*SMALL, "--epochs", "4", "--max-failures", "2", "--out", str(out), "--run-name", "killed"]
        job = start_job(args, env, log)
        started = time.perf_counter()

        # Both trainers' workers, as this head's state API lists them (asked before the kill
        # window opens: the query takes seconds on a busy machine, an epoch not many more).
        workers: list[int] = []
        error = ""
        deadline = time.time() + 400
        while len(workers) < 2 and time.time() < deadline and job.poll() is None:
            time.sleep(1.0)
            workers, error = train_worker_pids(head)
        assert len(workers) == 2, f"training workers not found ({workers}; last query's error: {error or 'none'}):\n{log.read_text()[-3000:]}"
        assert set(workers) <= set(head.own_pids())  # processes of our head, never another Ray instance's

        # The baseline's worker is the one whose own stdout holds the baseline's epochs.
        def victim() -> int | None:
            owners = [pid for pid in workers if "[baseline] epoch" in worker_log(head, pid)]
            return owners[0] if len(owners) == 1 and baseline_checkpointed(run) else None

        assert wait_for(lambda: victim() is not None, 400, job, poll=0.1), f"no baseline checkpoint:\n{log.read_text()[-3000:]}"
        pid = victim()
        checkpoints = sorted(p.name for p in (run / "train" / "baseline").glob("checkpoint_*"))
        os.kill(pid, signal.SIGKILL)
        print(f"\nkilled baseline worker {pid} after {time.perf_counter() - started:.0f} s; checkpoints then: {checkpoints}")

        returncode = job.wait(timeout=600)
        text = log.read_text()
        assert returncode == 0, text[-4000:]
        resumed = [line for line in text.splitlines() if "[baseline] resuming after epoch" in line]
        assert resumed, f"no restart logged:\n{text[-4000:]}"
        epoch = int(resumed[0].rsplit(" ", 1)[1])
        assert 1 <= epoch < 4, resumed  # restarted from a checkpoint, not from scratch, not after the end
        print(f"{resumed[0].strip()}; job finished after {time.perf_counter() - started:.0f} s")
        history = json.loads((run / "variants" / "baseline" / "history.json").read_text())
        assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3, 4]
        other = json.loads((run / "variants" / "augmented" / "history.json").read_text())
        assert [e["epoch"] for e in other["epochs"]] == [1, 2, 3, 4]
        assert "[augmented] resuming" not in text  # the other trainer was not disturbed
        assert (run / "summary.json").is_file()
        check_nothing_half_written(run)
    finally:
        if job is not None and job.poll() is None:
            job.kill()  # our own child, by its PID
            job.wait(timeout=30)
        head.stop()
    assert not head.own_pids(), "processes of the test's head survived"


# -- 3 and 4. SIGTERM to the driver, then a re-run; a corrupt data file --------------------


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """A job that got SIGTERM right after both trainings finished: (run folder, args, result dict)."""
    out = tmp_path_factory.mktemp("sigterm") / "runs"
    run = out / "interrupted"
    args = [*SMALL, "--epochs", "3", "--out", str(out), "--run-name", "interrupted"]
    log = out.parent / "first.log"
    job = start_job(args, local_env(), log)
    ray_processes: dict[int, str] = {}
    try:
        trained = lambda: all((run / "stages" / f"train_{v}.json").is_file() for v in VARIANTS)  # noqa: E731
        assert wait_for(trained, 500, job, poll=0.1), f"training did not finish:\n{log.read_text()[-3000:]}"
        ray_processes = descendants(job.pid)  # the job's local Ray: GCS, raylet, workers
        assert job.poll() is None, "the job finished before it could be interrupted"
        os.kill(job.pid, signal.SIGTERM)  # the driver only
        returncode = job.wait(timeout=120)
        # The job's local Ray should go down with its driver; give it a little time.
        wait_for(lambda: not still_alive(ray_processes), 60)
        survivors = still_alive(ray_processes)
        print(f"\nSIGTERM -> exit {returncode}; {len(ray_processes)} Ray processes of the job, {len(survivors)} alive 60 s later")
        yield run, args, {"returncode": returncode, "log": log.read_text(), "ray_processes": ray_processes, "survivors": survivors}
    finally:
        if job.poll() is None:
            job.kill()
            job.wait(timeout=30)
        kill_all(ray_processes)  # only the processes this job started, found through its parent chain


@pytest.mark.e2e
def test_sigterm_exits_130_with_the_interrupted_message(interrupted_run):
    _, _, result = interrupted_run
    assert result["returncode"] == 130, result["log"][-2000:]
    assert INTERRUPT_MESSAGE.search(result["log"]), result["log"][-2000:]


@pytest.mark.e2e
def test_sigterm_stops_the_jobs_own_ray(interrupted_run):
    _, _, result = interrupted_run
    assert result["returncode"] != 0
    assert len(result["ray_processes"]) >= 2, result["ray_processes"]  # at least GCS and raylet were seen
    assert not result["survivors"], f"Ray processes of the interrupted job still alive 60 s later: {result['survivors']}"


@pytest.mark.e2e
def test_interrupted_run_has_nothing_half_written(interrupted_run):
    run, _, _ = interrupted_run
    check_nothing_half_written(run)
    recorded = check_stage_records(run)
    assert {"train_baseline", "train_augmented"} <= recorded
    assert not (run / "summary.json").exists() or "evaluate" in recorded


@pytest.mark.e2e
def test_rerun_after_sigterm_skips_training_and_finishes(interrupted_run):
    run, args, _ = interrupted_run
    again = run_job(args, local_env())
    text = again.stdout + again.stderr
    assert again.returncode == 0, text[-3000:]
    for variant in VARIANTS:
        assert f"[{variant}] training already finished: skipped" in text
    assert "] epoch " not in text
    summary = json.loads((run / "summary.json").read_text())
    assert {v: summary["variants"][v]["epochs"] for v in VARIANTS} == {"baseline": 3, "augmented": 3}
    check_nothing_half_written(run)
    assert check_stage_records(run) == {"train_baseline", "train_augmented", "evaluate", "browser", "slices"}  # --skip-stress: no stress stage

def write_truncated_npz(path: Path) -> None:
    """A real CIFAR-layout .npz cut in half, as an interrupted copy leaves it."""
    from stress.data import make_synthetic

    full = path.with_suffix(".full.npz")
    np.savez(full, **make_synthetic(100, 20))
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    full.unlink()


@pytest.mark.e2e
def test_a_corrupt_data_file_writes_nothing(tmp_path):
    bad = tmp_path / "cifar.npz"
    bad.write_bytes(b"PK\x03\x04" + os.urandom(2000))  # looks like a zip archive, is not one
    out = tmp_path / "runs"
    result = run_job(["--data", str(bad), "--out", str(out), "--run-name", "bad"], local_env(), timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: "), result.stderr
    assert not out.exists(), sorted(str(p) for p in out.rglob("*"))


@pytest.mark.e2e
def test_a_truncated_data_file_leaves_an_existing_run_untouched(tmp_path):
    """A run folder from an earlier run (made by hand here: no training needed) stays byte for byte."""
    from stress.artifacts import RunFolder, write_json

    run = RunFolder(tmp_path / "runs" / "existing")
    write_json(run.path("config.json"), {"data": {"source": "synthetic"}})
    write_json(run.path("split.json"), {"seed": 42, "val_indices": [1, 2, 3]})
    before = folder_snapshot(run.root)
    bad = tmp_path / "cifar.npz"
    write_truncated_npz(bad)
    result = run_job(["--data", str(bad), "--out", str(tmp_path / "runs"), "--run-name", "existing"], local_env(), timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: "), result.stderr
    assert folder_snapshot(run.root) == before
    check_nothing_half_written(run.root)
