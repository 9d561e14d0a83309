"""Mirroring run folders to storage URIs (file:// stands in for s3:// and gs://, through the same pyarrow.fs code)."""

from __future__ import annotations

import pytest

from stress.errors import StressError
from stress.storage import download, is_uri, staging_folder, upload


def test_upload_then_download_round_trips_everything_but_train(tmp_path):
    local = tmp_path / "local"
    (local / "stages").mkdir(parents=True)
    (local / "eval").mkdir()
    (local / "train" / "baseline").mkdir(parents=True)
    (local / "summary.json").write_text('{"a": 1}')
    (local / "eval" / "x.npz").write_bytes(b"\x00\x01binary")
    (local / "stages" / "train.json").write_text("{}")
    (local / "train" / "baseline" / "checkpoint").write_text("written by Ray Train itself")
    (local / "eval" / ".half.json.tmp").write_text("never uploaded")
    uri = f"file://{tmp_path}/bucket/run"
    upload(local, uri)
    assert (tmp_path / "bucket" / "run" / "eval" / "x.npz").read_bytes() == b"\x00\x01binary"
    assert not (tmp_path / "bucket" / "run" / "train").exists()
    assert not (tmp_path / "bucket" / "run" / "eval" / ".half.json.tmp").exists()
    copy = tmp_path / "copy"
    assert download(uri, copy) is True
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()) == [
        "eval/x.npz", "stages/train.json", "summary.json",
    ]


def test_download_of_a_missing_run_is_false(tmp_path):
    assert download(f"file://{tmp_path}/nothing/here", tmp_path / "copy") is False
    assert not (tmp_path / "copy").exists()


def test_bad_uri_is_a_one_line_error(tmp_path):
    with pytest.raises(StressError, match="unusable storage URI"):
        upload(tmp_path, "nosuchscheme://bucket/run")


def test_uri_detection_and_staging_is_per_uri():
    assert is_uri("s3://bucket/runs") and is_uri("gs://b/r") and not is_uri("/mnt/shared/runs")
    assert staging_folder("s3://a/b", "run") != staging_folder("s3://a/c", "run")
