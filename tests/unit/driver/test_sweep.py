"""A sweep's output location is checked before anything starts (no Ray is reached in these tests)."""

from __future__ import annotations

import json
import shutil

import pytest

from stress.driver import sweep
from stress.errors import StressError


def refuse_ray(*args, **kwargs):
    raise AssertionError("Ray was reached before the output location was checked")


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    monkeypatch.setattr(sweep.cluster, "connect", refuse_ray)


@pytest.mark.slow
def test_a_sweep_to_a_storage_uri_puts_every_seed_and_its_report_there(tiny_config, tmp_path, monkeypatch, capsys):
    """Trials mirror their seed folders to the URI (as on other nodes); the driver reads them back, writes there.

    file:// stands in for s3://, through the same pyarrow.fs code; the trials run in this process
    (LocalExecutor) in place of Ray Tune, each through the same run_seed a Tune trial calls.
    """
    from stress.driver.fanout import LocalExecutor
    from stress.storage import staging_folder

    bucket = tmp_path / "bucket"
    uri = f"file://{bucket}/sweeps"
    calls = []

    def trials(base, seeds, root, resume, concurrent, trial):
        calls.append((root, base.out, trial))
        for seed in seeds:
            sweep.run_seed({"seed": seed, "base": base.to_dict(), "root": root}, executor=LocalExecutor())
            shutil.rmtree(staging_folder(root, f"seed_{seed}"))  # nothing of the trial is left on the driver's machine
        return seeds

    monkeypatch.setattr(sweep.cluster, "connect", lambda address, log=None: {"CPU": 2.0})
    monkeypatch.setattr(sweep, "check_resources", lambda *args: None)
    monkeypatch.setattr(sweep.cluster, "run_seed_sweep", trials)
    config = tiny_config(out=uri, run_name="sw", **{"stress.skip_stress": True, "stress.faithfulness_images": 8})
    lines = []
    summary = sweep.run_sweep(config, [1, 2], max_concurrent=1, log=lines.append)
    assert calls == [(f"{uri}/sw", f"{uri}/sw", sweep.seed_trial)]
    there = bucket / "sweeps" / "sw"
    assert summary["seeds"] == [1, 2] and json.loads((there / "summary.json").read_text())["seeds"] == [1, 2]
    assert summary["run"]["folder"] == f"{uri}/sw"
    for name in ("report.html", "stability.npz", "seed_1/summary.json", "seed_2/report.html", "seed_2/variants/baseline/model.pt"):
        assert (there / name).is_file(), name
    local = staging_folder(uri, "sw")
    assert (local / "report.html").is_file() and not (local / "seed_1" / "variants").exists()  # weights stay in storage
    assert not (local / "seed_1" / "run.lock").exists() and not (local / "tune").exists()
    assert f"report: {uri}/sw/report.html (local copy {local / 'report.html'})" in lines
    assert lines[-1].endswith(f"s: {uri}/sw")
    # Trials run at once and print into one log: each trial's own lines name its seed.
    printed = capsys.readouterr().out.splitlines()
    assert [line.split("] ")[0] for line in printed if "evaluate: " in line] == ["[seed 1", "[seed 2"]
    # So do the trainers' epoch lines, which LocalExecutor's in-process training writes through the trial's log.
    epochs = [line for line in printed if "] epoch " in line]
    assert [line.split("] ")[0] for line in epochs] == ["[seed 1"] * 4 + ["[seed 2"] * 4, epochs  # 2 variants x 2 epochs


def test_a_relative_out_is_refused_inside_a_submitted_job(tiny_config, tmp_path, monkeypatch):
    job_dir = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "x"
    job_dir.mkdir(parents=True)
    monkeypatch.chdir(job_dir)
    with pytest.raises(StressError, match="is relative, but this job runs in Ray's temporary copy of the working dir"):
        sweep.run_sweep(tiny_config(out="runs"), [42, 43], log=lambda line: None)
    assert not (job_dir / "runs").exists()


@pytest.mark.parametrize("seeds, message", [([], "need distinct non-negative seeds"), ([42, 42], "need distinct"), ([-1], "non-negative")])
def test_bad_seed_lists_are_refused(tiny_config, tmp_path, seeds, message):
    with pytest.raises(StressError, match=message):
        sweep.run_sweep(tiny_config(out=str(tmp_path)), seeds, log=lambda line: None)


def test_an_unusable_storage_uri_is_refused_in_one_line_before_ray_starts(tiny_config):
    with pytest.raises(StressError, match=r"nosuchscheme://bucket/runs/sw: unusable storage URI") as error:
        sweep.run_sweep(tiny_config(out="nosuchscheme://bucket/runs", run_name="sw"), [42, 43], log=lambda line: None)
    assert "\n" not in str(error.value)


def test_a_sweep_into_a_single_runs_folder_is_refused_before_ray_starts(tiny_config, tmp_path):
    """The Python API's run_name defaults to "default" for both: stress.sweep after stress.run would overwrite that run's
    summary and report."""
    single = tmp_path / "default"
    single.mkdir()
    (single / "config.json").write_text("{}")
    (single / "split.json").write_text('{"val_indices": []}')
    with pytest.raises(StressError, match=r"default holds a single run \(its config.json and split.json\); use another --run-name"):
        sweep.run_sweep(tiny_config(out=str(tmp_path), run_name="default"), [42, 43], log=lambda line: None)
    assert sorted(p.name for p in single.iterdir()) == ["config.json", "split.json"]
