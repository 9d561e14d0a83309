"""End-to-end: the real main job on synthetic data on a local Ray instance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "jobs" / "stress_test.py"
SMALL = [
    "--data", "synthetic", "--epochs", "2", "--val-size", "200", "--shards", "2",
    "--faithfulness-images", "40", "--stress-limit", "100", "--corruptions", "gaussian_noise,contrast,jpeg_compression",
    "--severities", "1,3,5", "--fourier-images", "20", "--texture-images", "100", "--adversarial-images", "10", "--pgd-steps", "3",
]

pytestmark = pytest.mark.e2e


def run_job(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # always a fresh local Ray
    return subprocess.run([sys.executable, str(JOB), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    result = run_job(*SMALL, "--audit-train-labels", "--audit-folds", "2", "--out", str(out), "--run-name", "e2e")
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "e2e", result


def test_the_train_label_audit_trains_its_folds_in_parallel_on_ray_train(finished_run):
    run, result = finished_run
    log = result.stdout + result.stderr
    assert "train-label audit: 2 of 2 fold trainings (baseline recipe, 1/2 of the training split each) in parallel on Ray Train" in log
    epochs = [line for line in log.splitlines() if "] epoch " in line and "[fold" in line]
    assert {line.split("[fold")[1][0] for line in epochs} == {"1", "2"}
    # A fold's last epoch line gives the accuracy on the training images it held out, under that name.
    assert sum("out_of_fold_acc" in line for line in epochs) == 2 and not any("test_acc" in line for line in epochs)
    # Every fold's epochs are in the log before the next stage starts: Ray's log folding, which held back
    # the second fold's lines ("[fold1]" and "[fold2]" differ only in a digit) until the job ended, is off.
    lines = log.splitlines()
    evaluate = next(i for i, line in enumerate(lines) if line.startswith("evaluate: "))
    assert all(lines.index(line) < evaluate for line in epochs), "\n".join(lines)
    record = json.loads((run / "eval" / "train_labels.json").read_text())
    assert record["n_images"] == 1800 and set(record["folds"]["accuracy"]) == {"fold1", "fold2"}
    # What the fold trainings ran in (on their Ray Train workers), gathered from their histories, and said in the report.
    assert record["folds"]["training_precision"] == "fp32" and "recipe on the other folds (trained in fp32)" in (run / "report.md").read_text()
    flagged = np.load(run / "eval" / "train_labels.npz")["flagged"]
    assert flagged.shape == (1800,) and int(flagged.sum()) == record["flagged"]
    summary = json.loads((run / "summary.json").read_text())
    assert {"labels", "slices", "train_labels"} <= set(summary)
    assert (run / "figures" / "embedding_map.png").is_file()


def test_both_trainings_ran_in_parallel_and_wrote_the_artifacts(finished_run):
    run, result = finished_run
    log = result.stdout + result.stderr
    # Both trainers' progress lines appear, and the baseline's second epoch is logged after the augmented's first.
    lines = [line for line in log.splitlines() if "] epoch " in line]
    assert any("[baseline] epoch 2/2" in line for line in lines)
    assert any("[augmented] epoch 2/2" in line for line in lines)
    for name in ("config.json", "manifest.json", "summary.json", "split.json", "eval/predictions.csv", "figures/training_curves.png",
                 "figures/confusion_baseline.png", "figures/confusion_augmented.png", "variants/baseline/model.pt", "variants/augmented/history.json"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["schema_version"] == 1
    assert summary["dataset"]["train"] == 1800 and summary["dataset"]["val"] == 200 and summary["dataset"]["test"] == 500
    assert len(summary["dataset"]["sha256"]) == 64
    for variant in ("baseline", "augmented"):
        values = summary["variants"][variant]
        assert values["epochs"] == 2
        assert values["test_acc"] > 0.3  # ten classes: chance is 0.1
        assert values["train_seconds"] > 0 and values["images_per_second"] > 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["versions"]["ray"] == "2.60.0"
    assert manifest["dataset"]["sha256"] == summary["dataset"]["sha256"]
    assert {"prepare", "train", "evaluate", "stress"} <= set(manifest["stage_seconds"])


def test_merged_shards_equal_a_single_in_process_pass(finished_run):
    import torch

    from stress.artifacts import load_torch
    from stress.config import DataConfig, ModelConfig
    from stress.data import load_dataset
    from stress.evaluate.predict import predict_logits
    from stress.models import create_model

    run, _ = finished_run
    data = load_dataset(DataConfig(source="synthetic"))
    with np.load(run / "eval" / "predictions.npz") as table:
        np.testing.assert_array_equal(table["labels"], data.y_test)
        for variant in ("baseline", "augmented"):
            assert np.array_equal(table[f"{variant}_indices"], np.arange(len(data.y_test)))  # each image exactly once
            model = create_model(ModelConfig())
            model.load_state_dict(load_torch(run / "variants" / variant / "model.pt")["model"])
            resolved = json.loads((run / "config.json").read_text())["model"]  # the training split's input statistics
            logits = predict_logits(model, torch.as_tensor(data.x_test), stats=(resolved["mean"], resolved["std"]))
            np.testing.assert_array_equal(table[f"{variant}_predicted"], logits.argmax(1).numpy())
            np.testing.assert_allclose(table[f"{variant}_logits"], logits.numpy(), rtol=1e-5, atol=1e-5)
            accuracy = float((logits.argmax(1).numpy() == data.y_test).mean())
            summary = json.loads((run / "summary.json").read_text())
            assert summary["failures"][variant]["accuracy"]["acc"] == pytest.approx(accuracy)


def test_failures_explanations_and_stress_sections(finished_run):
    run, _ = finished_run
    summary = json.loads((run / "summary.json").read_text())
    for variant in ("baseline", "augmented"):
        failures = summary["failures"][variant]
        assert failures["n_errors"] == round(failures["error_rate"] * failures["n_images"])
        pairs = {(c["true"], c["predicted"]) for c in failures["cases"]}
        assert len(pairs) == len(failures["cases"]) >= 3
        assert all(c["true"] != c["predicted"] for c in failures["cases"])
        explanations = summary["explanations"][variant]
        assert explanations["faithfulness"]["n_images"] >= 10
        robustness = summary["robustness"][variant]
        assert set(robustness["by_corruption"]) == {"gaussian_noise", "contrast", "jpeg_compression"}
        assert all(len(accs) == 3 for accs in robustness["by_corruption"].values())
        calibration = summary["calibration"][variant]
        assert 0 <= calibration["ece"] <= 1 and calibration["temperature"] > 0
        fourier = summary["fourier"]["models"][variant]
        assert fourier["most_sensitive_band"] in ("low", "middle", "high") and 0 <= fourier["mean_error"]["mean"] <= 1
    assert summary["fourier"]["frequencies"] == 514 and summary["fourier"]["images"] == 20
    markdown = (run / "report.md").read_text()
    assert all(f"Why it fails: {what}" in markdown for what in ("frequency sensitivity", "texture versus shape", "adversarial robustness"))
    assert summary["texture"]["images"] == 100 and summary["adversarial"]["images"] == 10 and summary["adversarial"]["autoattack"]
    for variant in ("baseline", "augmented"):
        attacked = summary["adversarial"]["models"][variant]
        robust, clean = attacked["robust"], attacked["clean"]["acc"]
        assert robust["linf_8/255"]["acc"] <= robust["linf_1/255"]["acc"] <= clean and robust["autoattack"]["acc"] <= clean
    with np.load(run / "eval" / "gradcam_cases.npz") as cases:
        assert cases["maps_baseline_predicted"].shape[1:] == (32, 32)
        assert len(cases["indices"]) == sum(len(summary["failures"][v]["cases"]) for v in ("baseline", "augmented"))


def test_rerun_skips_finished_stages(finished_run):
    run, _ = finished_run
    before = (run / "variants" / "baseline" / "model.pt").read_bytes()
    result = run_job(*SMALL, "--out", str(run.parent), "--run-name", "e2e")
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "[baseline] training already finished: skipped" in log
    assert "[augmented] training already finished: skipped" in log
    assert "evaluate: already finished: skipped" in log
    assert "stress: already finished: skipped" in log and "fourier: already finished: skipped" in log
    assert "texture: already finished: skipped" in log and "attack: already finished: skipped" in log
    assert "] epoch " not in log
    assert (run / "variants" / "baseline" / "model.pt").read_bytes() == before


def test_more_audit_folds_on_the_same_run_name_train_every_fold_afresh(finished_run, tmp_path):
    """--audit-folds 2, then 3: fold1 of three holds out other images than fold1 of two, so the checkpoints Ray Train keeps
    under the fold's name must not be resumed (resumed, fold1 would have trained on images it now holds out). Ray hands them
    over (the log line says each was seen), and each trainer starts from scratch (stress.train.training_identity)."""
    import shutil

    run, _ = finished_run
    shutil.copytree(run, tmp_path / "e2e")
    result = run_job(*SMALL, "--audit-train-labels", "--audit-folds", "3", "--out", str(tmp_path), "--run-name", "e2e")
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    for fold in ("fold1", "fold2"):
        assert f"[{fold}] the checkpoint under this run name was trained from other options or data: training from scratch" in log
    assert "resuming after epoch" not in log and "[baseline] training already finished: skipped" in log
    epochs = {line.split("[fold")[1][0] for line in log.splitlines() if "] epoch 2/2" in line and "[fold" in line}
    assert epochs == {"1", "2", "3"}  # every fold trained its epochs here
    record = json.loads((tmp_path / "e2e" / "eval" / "train_labels.json").read_text())
    assert record["folds"]["k"] == 3 and set(record["folds"]["accuracy"]) == {"fold1", "fold2", "fold3"}


def test_the_trained_model_files_given_back_with_evaluate_reproduce_the_run(finished_run, tmp_path):
    """Evaluate-only on Ray: the run's two model.pt files, given back, give the same evaluation, stress and calibration."""
    run, _ = finished_run
    given = [arg for v in ("baseline", "augmented") for arg in ("--evaluate", f"{v}={run / 'variants' / v / 'model.pt'}")]
    # The Fourier, texture and attack stages are compared with the run nowhere here: left out, they cost nothing.
    probes_off = ["--fourier-images", "0", "--texture-images", "0", "--adversarial-images", "0"]
    result = run_job(*SMALL, *probes_off, *given, "--out", str(tmp_path), "--run-name", "given")
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "] epoch " not in log and "[baseline]" in log and ": imported (" in log
    trained, again = (json.loads((folder / "summary.json").read_text()) for folder in (run, tmp_path / "given"))
    for section in ("failures", "robustness", "calibration"):
        assert json.dumps(again[section], sort_keys=True) == json.dumps(trained[section], sort_keys=True), section
    for v in ("baseline", "augmented"):
        assert abs(again["variants"][v]["test_acc"] - trained["variants"][v]["test_acc"]) < 1e-6


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "/nonexistent/cifar.npz"], "/nonexistent/cifar.npz: no such file or folder"),
        (["--data", "synthetic", "--epochs", "0"], "train.epochs must be >= 1"),
        (["--data", "synthetic", "--lr", "nan"], "train.lr must be a finite number"),
        (["--data", "synthetic", "--corruptions", "fog,rain"], "unknown rain; valid choices:"),
        (["--data", "synthetic", "--severities", "0,6"], "valid choices: 1, 2, 3, 4, 5"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    result = run_job(*args, "--out", str(tmp_path / "runs"), "--run-name", "bad", timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()


def test_corrupt_npz_and_unwritable_output(tmp_path):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive")
    result = run_job("--data", str(bad), "--out", str(tmp_path / "runs"), timeout=120)
    assert result.returncode == 2 and str(bad) in result.stderr and len(result.stderr.strip().splitlines()) == 1
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_job("--data", "synthetic", "--val-size", "100", "--out", str(blocker / "runs"), timeout=120)
    assert result.returncode == 2 and "not writable" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_ray_address_that_does_not_answer_fails_fast(tmp_path):
    import socket
    import time

    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(JOB), "--data", "synthetic", "--val-size", "100", "--out", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=120, env=env, cwd=REPO,
    )
    assert result.returncode == 2 and time.monotonic() - started < 60
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"Ray at 127.0.0.1:{port} does not answer" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_the_log_holds_only_the_projects_own_lines(finished_run):
    """Every line of a local run's log is the project's progress (tests/log_lines.py); Ray's own lines are switched off."""
    from log_lines import sort_lines

    _, result = finished_run
    own, explained, unexplained = sort_lines(result.stdout + result.stderr)
    assert unexplained == [] and explained == {}
    assert sum(own.values()) > 40
    assert "\x1b" not in result.stdout + result.stderr  # no colour codes in a log that is not a terminal


DIGIT_LINES = """
import sys, time
sys.path.insert(0, sys.argv[1])
from stress.driver.connection import connect
import ray

connect(None, num_cpus=2)

@ray.remote
def fold(i):
    time.sleep(i)
    print(f"[fold{i}] epoch 1/1 train_loss 0.{i}", flush=True)

ray.get([fold.remote(1), fold.remote(2)])
time.sleep(5)  # Ray forwards a worker's line within a second or so
print("next stage", flush=True)
ray.shutdown()
"""


@pytest.mark.parametrize("dedup", ["default", "planted: RAY_DEDUP_LOGS=1"])
def test_worker_lines_that_differ_in_a_digit_are_all_printed_in_time(dedup):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_DEDUP_LOGS")}
    if dedup != "default":
        env["RAY_DEDUP_LOGS"] = "1"
    result = subprocess.run([sys.executable, "-c", DIGIT_LINES, str(REPO)], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    folds = [i for i, line in enumerate(lines) if "] epoch 1/1" in line]
    assert len(folds) == 2, lines
    in_time = max(folds) < lines.index("next stage")
    assert in_time == (dedup == "default"), lines


def test_the_log_check_sees_ray_lines():
    """Planted: lines a run of the flat-layout code printed (Train's report and cleaner lines) are caught."""
    from log_lines import sort_lines

    old = ("\x1b[36m(RayTrainWorker pid=16922)\x1b[0m Reporting training result 8: TrainingReport(checkpoint=None)\n"
           "\x1b[36m(PlacementGroupCleaner pid=16804)\x1b[0m Failed to query Ray Train Controller actor state.\n"
           "2026-12-01 13:50:47,001\tWARNING authentication_token_setup.py:85 -- Token authentication is enabled for this Ray cluster.\n"
           "\x1b[36m(RayTrainWorker pid=16922)\x1b[0m [augmented] epoch 8/15 train_loss 0.77 val_acc 0.73 1053 img/s\n")
    own, _, unexplained = sort_lines(old)
    assert len(unexplained) == 3 and sum(own.values()) == 1


def test_the_cleaners_lock_trace_is_explained_and_no_other_abseil_line():
    """The three lines a run with --audit-train-labels printed as a fold trainer's cleaner ended (real CIFAR-10, 2
    folds), and a line of the same source that says something else, which stays unexplained."""
    from log_lines import sort_lines

    seen = ("(PlacementGroupCleaner pid=7292) [mutex.cc : 452] RAW: Lock blocking 0x5574ec464b90   @ 0x7fbf0ec2b1a2 0x7fbf0dcfb23c\n"
            "(PlacementGroupCleaner pid=7292) [mutex.cc : 452] RAW: Lock returning 0x5574ec464b90   @ 0x7fbf0ec2b1a2 0x7fbf0dcfb23c\n"
            "(PlacementGroupCleaner pid=7292) [mutex.cc : 452] RAW: Unlock 0x5574ec464b90   @ 0x7fbf0e5c2037 0x7fbf0ec4c3b0\n")
    _, explained, unexplained = sort_lines(seen + "(RayTrainWorker pid=7347) [mutex.cc : 1384] RAW: Potential Mutex deadlock:\n")
    assert explained == {"placement-group cleaner: abseil lock trace": 3} and unexplained == ["[mutex.cc : 1384] RAW: Potential Mutex deadlock:"]
