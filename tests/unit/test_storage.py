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
        ".mirrored.json", "eval/x.npz", "stages/train.json", "summary.json",  # the mirror record stays local
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


def test_the_run_lock_works_on_storage_uris(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from stress.storage import acquire_lock, release_lock

    uri = f"file://{tmp_path}/bucket/run"
    lock = tmp_path / "bucket" / "run" / "run.lock"
    token = acquire_lock(uri)
    holder = json.loads(lock.read_text())
    assert holder["pid"] == os.getpid() and holder["token"] == token and {"owner", "host", "started"} <= set(holder)
    assert acquire_lock(uri) == token  # the holder may ask again
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as other:
        try:
            lock.write_text(json.dumps({**holder, "pid": other.pid, "token": "theirs"}))
            with pytest.raises(StressError) as info:
                acquire_lock(uri)
            assert "\n" not in str(info.value) and f"{uri} is in use by {holder['owner']}@{holder['host']} pid {other.pid}" in str(info.value)
            release_lock(uri, token)  # not ours any more: left alone
            assert lock.is_file()
        finally:
            other.kill()
    other.wait()
    warnings: list[str] = []
    token = acquire_lock(uri, warnings.append)  # its owner is dead: stale, taken over
    assert warnings and f"stale lock of pid {other.pid}" in warnings[0]
    release_lock(uri, token)
    assert not lock.exists()
    lock.write_text(json.dumps({**holder, "host": "elsewhere", "pid": 1}))
    with pytest.raises(StressError, match=r"in use by .*@elsewhere pid 1 .*delete .*run.lock"):
        acquire_lock(uri)
    lock.write_text("[]")
    with pytest.raises(StressError, match="run.lock exists but names no owner"):
        acquire_lock(uri)


def test_two_jobs_writing_the_storage_lock_at_once_leave_one_owner(tmp_path, monkeypatch):
    """The read-back after writing: the job whose token is not read back refuses."""
    import json

    from stress import storage

    uri = f"file://{tmp_path}/bucket/run"
    lock = tmp_path / "bucket" / "run" / "run.lock"
    real_filesystem = storage._filesystem

    class RacingFilesystem:
        """Passes everything through; the other job's write lands just after ours."""

        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def open_output_stream(self, path):
            stream = self.inner.open_output_stream(path)
            close = stream.close

            class Racing:
                def write(self, data):
                    stream.write(data)

                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    close()
                    lock.write_text(json.dumps({"owner": "other", "host": "elsewhere", "pid": 7, "token": "theirs"}))

            return Racing()

    monkeypatch.setattr(storage, "_filesystem", lambda u: (RacingFilesystem(real_filesystem(u)[0]), real_filesystem(u)[1]))
    with pytest.raises(StressError, match="was locked by another job at the same moment"):
        storage.acquire_lock(uri)
    assert json.loads(lock.read_text())["token"] == "theirs"


def _folder(root):
    (root / "stages").mkdir(parents=True)
    (root / "eval").mkdir()
    (root / "summary.json").write_text('{"a": 1}')
    (root / "eval" / "x.npz").write_bytes(b"\x00\x01binary")
    (root / "stages" / "train.json").write_text("{}")
    return root


def _mirrored(tmp_path):
    """A small run folder mirrored once to a file:// URI: (local folder, storage-side folder, URI)."""
    local, remote = _folder(tmp_path / "local"), tmp_path / "bucket" / "run"
    uri = f"file://{remote}"
    upload(local, uri)
    return local, remote, uri


def _tamper(remote, relative):
    """Overwrite a file on the storage side: it survives a mirror only if the mirror does not send that file again."""
    (remote / relative).write_text("tampered on the storage side")


def test_a_mirror_sends_only_the_files_that_changed(tmp_path):
    import os

    local, remote = _folder(tmp_path / "local"), tmp_path / "bucket" / "run"
    uri = f"file://{remote}"
    assert upload(local, uri) == 3
    _tamper(remote, "summary.json")
    _tamper(remote, "eval/x.npz")
    assert upload(local, uri) == 0  # nothing changed here: nothing sent
    assert (remote / "summary.json").read_text() == "tampered on the storage side"
    # A rewrite of the same size (a new modification time, as every atomic write gives) and a new file are sent.
    (local / "eval" / "x.npz").write_bytes(b"\x00\x02binary")
    stamp = (local / "eval" / "x.npz").stat()
    os.utime(local / "eval" / "x.npz", ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000))
    (local / "figures").mkdir()
    (local / "figures" / "a.png").write_bytes(b"png")
    assert upload(local, uri) == 2
    assert (remote / "eval" / "x.npz").read_bytes() == b"\x00\x02binary"
    assert (remote / "figures" / "a.png").read_bytes() == b"png"
    assert (remote / "summary.json").read_text() == "tampered on the storage side"
    assert not (remote / ".mirrored.json").exists()  # the record stays in the staging folder


def test_without_its_record_a_mirror_sends_everything_again(tmp_path):
    """The planted case: the record is what saves the uploads; without it every file is sent."""
    local, remote, uri = _mirrored(tmp_path)
    _tamper(remote, "summary.json")
    (local / ".mirrored.json").unlink()
    assert upload(local, uri) == 3
    assert (remote / "summary.json").read_text() == '{"a": 1}'


def test_what_was_downloaded_is_not_sent_back(tmp_path):
    local, remote, uri = _mirrored(tmp_path)
    copy = tmp_path / "staging"
    assert download(uri, copy) is True
    _tamper(remote, "summary.json")
    assert upload(copy, uri) == 0
    (copy / "report.html").write_text("<html></html>")
    assert upload(copy, uri) == 1
    assert (remote / "summary.json").read_text() == "tampered on the storage side"


def test_a_storage_location_emptied_since_clears_the_record(tmp_path):
    import shutil

    local, remote, uri = _mirrored(tmp_path)
    shutil.rmtree(remote)  # deleted on the storage side
    assert download(uri, local) is False
    assert upload(local, uri) == 3
    assert (remote / "summary.json").read_text() == '{"a": 1}'


def test_download_leaves_out_what_skip_names(tmp_path):
    local, remote, uri = _mirrored(tmp_path)
    copy = tmp_path / "copy"
    assert download(uri, copy, skip=lambda relative: relative.startswith("eval/")) is True
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()) == [
        ".mirrored.json", "stages/train.json", "summary.json",
    ]
