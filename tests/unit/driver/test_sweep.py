"""A sweep's output location is checked before anything starts (no Ray is reached in these tests)."""

from __future__ import annotations

import pytest

from stress.driver import sweep
from stress.errors import StressError


def refuse_ray(*args, **kwargs):
    raise AssertionError("Ray was reached before the output location was checked")


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    monkeypatch.setattr(sweep.cluster, "connect", refuse_ray)


def test_a_uri_out_is_refused_in_one_line(tiny_config):
    with pytest.raises(StressError, match=r"--out s3://bucket/runs: seed sweeps write to a path") as error:
        sweep.run_sweep(tiny_config(out="s3://bucket/runs"), [42, 43], log=lambda line: None)
    assert "\n" not in str(error.value)


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
