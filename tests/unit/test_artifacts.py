"""stress.artifacts: atomic writes, JSON reading errors, run-folder checks, stage records, torch files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from stress import artifacts
from stress.artifacts import (
    RunFolder,
    config_key,
    load_torch,
    read_json,
    save_torch,
    write_bytes_atomic,
    write_json,
    write_npz,
)
from stress.errors import StressError


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------- JSON


def test_write_json_converts_numpy_and_non_finite_floats(tmp_path):
    value = {
        "int": np.int64(3),
        "float": np.float32(1.5),
        "array": np.array([[1, 2], [3, 4]], dtype=np.int16),
        "nan": float("nan"),
        "inf": -float("inf"),
        "numpy_nan": np.float64("nan"),
        "nested": [{"x": (1.0, float("nan"))}],
        "path": Path("a/b"),
        "text": "é",
    }
    path = write_json(tmp_path / "out" / "v.json", value)  # parent folder is created
    assert path == tmp_path / "out" / "v.json"
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text)  # strict standard JSON
    assert loaded == {
        "int": 3,
        "float": 1.5,
        "array": [[1, 2], [3, 4]],
        "nan": None,
        "inf": None,
        "numpy_nan": None,
        "nested": [{"x": [1.0, None]}],
        "path": "a/b",
        "text": "é",
    }
    assert read_json(path) == loaded
    assert listing(path.parent) == ["v.json"]  # no temporary file left


def test_write_json_refuses_unknown_objects_without_leaving_files(tmp_path):
    with pytest.raises(TypeError):
        write_json(tmp_path / "v.json", {"x": object()})
    assert listing(tmp_path) == []


def test_write_json_numpy_bool(tmp_path):
    write_json(tmp_path / "v.json", {"ok": np.bool_(True)})
    assert read_json(tmp_path / "v.json") == {"ok": True}


def test_overwrite_replaces_the_file(tmp_path):
    path = tmp_path / "v.json"
    write_json(path, {"a": 1})
    write_json(path, {"b": 2})
    assert read_json(path) == {"b": 2}
    assert listing(tmp_path) == ["v.json"]


def test_failed_rename_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    path = tmp_path / "v.json"
    write_json(path, {"version": 1})

    def broken_replace(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifacts.os, "replace", broken_replace)
    with pytest.raises(StressError, match=r"v.json: cannot write \(No space left on device\)"):  # one line, not a traceback
        write_json(path, {"version": 2})
    monkeypatch.undo()
    assert read_json(path) == {"version": 1}
    assert listing(tmp_path) == ["v.json"]


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    # Ctrl-C during fsync (a BaseException) must also clean up.
    path = tmp_path / "data.bin"
    write_bytes_atomic(path, b"old")

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(artifacts.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_bytes_atomic(path, b"new" * 1000)
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert listing(tmp_path) == ["data.bin"]


@pytest.mark.parametrize("content", ['{"a": 1', "", "{'a': 1}"], ids=["truncated", "empty", "single-quotes"])
def test_read_json_corrupt_is_one_line_naming_the_file(tmp_path, content):
    path = tmp_path / "summary.json"
    path.write_text(content)
    with pytest.raises(StressError) as info:
        read_json(path)
    message = str(info.value)
    assert str(path) in message and "corrupt JSON" in message and "\n" not in message


def test_read_json_missing_and_directory(tmp_path):
    with pytest.raises(StressError, match="missing"):
        read_json(tmp_path / "absent.json")
    with pytest.raises(StressError, match="cannot read"):
        read_json(tmp_path)


def test_read_json_binary_garbage(tmp_path):
    path = tmp_path / "summary.json"
    path.write_bytes(b"\xff\xfe\x00\x80garbage")
    with pytest.raises(StressError, match="summary.json"):
        read_json(path)


def test_write_npz_round_trip(tmp_path):
    arrays = {"a": np.arange(12).reshape(3, 4), "b": np.array([True, False])}
    path = write_npz(tmp_path / "x.npz", **arrays)
    with np.load(path) as archive:
        assert sorted(archive.files) == ["a", "b"]
        np.testing.assert_array_equal(archive["a"], arrays["a"])
        np.testing.assert_array_equal(archive["b"], arrays["b"])
    assert listing(tmp_path) == ["x.npz"]


# ---------------------------------------------------------------- run folder


def test_ensure_writable_creates_the_folder(tmp_path):
    folder = RunFolder(tmp_path / "runs" / "trial")
    folder.ensure_writable()
    assert folder.root.is_dir() and listing(folder.root) == []  # the probe is removed
    assert folder.root.is_absolute()
    assert folder.path("eval", "x.npz") == folder.root / "eval" / "x.npz"
    assert folder.variant_dir("baseline") == folder.root / "variants" / "baseline"
    assert folder.figures == folder.root / "figures"


def test_ensure_writable_under_a_regular_file(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    folder = RunFolder(tmp_path / "file" / "run")
    with pytest.raises(StressError) as info:
        folder.ensure_writable()
    assert str(folder.root) in str(info.value) and "not writable" in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_ensure_writable_on_a_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StressError, match="not writable"):
            RunFolder(locked / "run").ensure_writable()
        with pytest.raises(StressError, match="not writable"):
            RunFolder(locked).ensure_writable()
    finally:
        locked.chmod(0o700)


def test_stage_records_with_keys(tmp_path):
    folder = RunFolder(tmp_path)
    assert not folder.stage_done("train") and folder.stage_record("train") is None
    key = config_key({"train": {"epochs": 2}, "data": {"source": "x"}, "stress": {}}, ("train", "data"))
    folder.mark_done("train", 12.5, key=key, accuracy=0.9)
    assert folder.stage_done("train")
    assert folder.stage_done("train", key)
    assert not folder.stage_done("train", "another-key")
    assert not folder.stage_done("evaluate")
    record = folder.stage_record("train")
    assert record["stage"] == "train" and record["seconds"] == 12.5 and record["accuracy"] == 0.9 and record["key"] == key
    assert (tmp_path / "stages" / "train.json").is_file()
    folder.clear_stage("train")
    assert not folder.stage_done("train")
    folder.clear_stage("train")  # clearing twice is harmless


def test_config_key_depends_only_on_the_named_sections():
    base = {"train": {"epochs": 2}, "data": {"source": "x"}, "stress": {"num_cases": 8}}
    key = config_key(base, ("train", "data"))
    assert len(key) == 16 and int(key, 16) >= 0
    assert config_key({**base, "stress": {"num_cases": 3}}, ("train", "data")) == key
    assert config_key({**base, "train": {"epochs": 3}}, ("train", "data")) != key
    # Key order inside a section does not matter.
    assert config_key({"train": {"b": 1, "a": 2}}, ("train",)) == config_key({"train": {"a": 2, "b": 1}}, ("train",))


# ---------------------------------------------------------------- torch files


def test_save_and_load_torch_round_trip(tmp_path):
    state = {
        "model": {"w": torch.randn(3, 4), "b": torch.zeros(4, dtype=torch.float64)},
        "epoch": 3,
        "history": [{"val_acc": 0.5}],
        "rng": torch.get_rng_state(),
        "name": "baseline",
    }
    path = save_torch(tmp_path / "variants" / "model.pt", state)
    loaded = load_torch(path)
    assert loaded.keys() == state.keys()
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["model"]["b"].dtype == torch.float64
    assert torch.equal(loaded["rng"], state["rng"])
    assert loaded["epoch"] == 3 and loaded["history"] == [{"val_acc": 0.5}] and loaded["name"] == "baseline"
    assert listing(path.parent) == ["model.pt"]


class Payload:
    """Not an allowed type for weights_only loading."""


def test_load_torch_refuses_arbitrary_pickles(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": Payload()}, path)
    with pytest.raises(StressError, match="not a readable checkpoint"):
        load_torch(path)


@pytest.mark.parametrize("content", [b"", b"garbage bytes, not a zip or pickle" * 4], ids=["empty", "garbage"])
def test_load_torch_on_a_garbage_file(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(StressError) as info:
        load_torch(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_load_torch_missing(tmp_path):
    with pytest.raises(StressError, match="missing"):
        load_torch(tmp_path / "absent.pt")


def test_one_writer_per_run_folder(tmp_path):
    import os
    import subprocess
    import sys

    run = RunFolder(tmp_path / "run")
    run.ensure_writable()
    run.acquire_lock()
    holder = json.loads((run.root / "run.lock").read_text())
    assert holder["pid"] == os.getpid() and {"owner", "host", "started"} <= set(holder)
    run.acquire_lock()  # the holder itself may ask again
    # Another live process on this host holds it: refused in one line naming the owner.
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as other:
        try:
            (run.root / "run.lock").write_text(json.dumps({**holder, "pid": other.pid}))
            with pytest.raises(StressError) as info:
                RunFolder(run.root).acquire_lock()
            message = str(info.value)
            assert "\n" not in message and f"is in use by {holder['owner']}@{holder['host']} pid {other.pid}" in message
        finally:
            other.kill()
    other.wait()
    # Its owner is now dead: a stale lock, taken over with a warning.
    warnings: list[str] = []
    second = RunFolder(run.root)
    second.acquire_lock(warnings.append)
    assert warnings and f"stale lock of pid {other.pid}" in warnings[0]
    assert json.loads((run.root / "run.lock").read_text())["pid"] == os.getpid()
    second.release_lock()
    assert not (run.root / "run.lock").exists()
    # A lock from another host cannot be checked and is refused.
    (run.root / "run.lock").write_text(json.dumps({**holder, "host": "elsewhere", "pid": 1}))
    with pytest.raises(StressError, match="in use by .*@elsewhere pid 1"):
        RunFolder(run.root).acquire_lock()


@pytest.mark.parametrize("content", ["[]", None])
def test_a_lock_that_names_no_owner_is_refused_with_what_to_do(tmp_path, content):
    run = RunFolder(tmp_path / "run")
    run.ensure_writable()
    lock = run.root / "run.lock"
    lock.mkdir() if content is None else lock.write_text(content)  # a folder, or JSON of the wrong structure
    with pytest.raises(StressError) as info:
        run.acquire_lock()
    assert str(info.value) == f"{lock} exists but names no owner (another job may be starting, or it is damaged); if no job uses this run, delete it"


def test_an_unwritable_target_is_a_one_line_error_and_the_old_file_stays(tmp_path):
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(StressError, match=r"folder.json: cannot write \(Is a directory\)"):
        write_json(tmp_path / "folder.json", {"a": 1})
    assert not list(tmp_path.glob(".folder.json.*"))  # no temporary file left behind
    (tmp_path / "file").write_text("old")
    with pytest.raises(StressError, match=r"file/x.json: cannot write"):
        write_json(tmp_path / "file" / "x.json", {"a": 1})
    assert (tmp_path / "file").read_text() == "old"


def test_read_record_names_the_file_and_what_is_wrong(tmp_path):
    path = tmp_path / "r.json"
    for content, needle in [("[1]", "expected a JSON object, got list"), ('{"a": 1}', "no 'baseline'"),
                            ('{"baseline": 2}', "the 'baseline' entry is a int, not an object")]:
        path.write_text(content)
        with pytest.raises(StressError, match=f"r.json: not a valid thing \\({needle}"):
            artifacts.read_record(path, "thing", keys=("baseline",) if "no" in needle else (), variants=("baseline",))
    path.write_text('{"baseline": {}}')
    assert artifacts.read_record(path, "thing", keys=("baseline",), variants=("baseline",)) == {"baseline": {}}


def test_file_sha256_is_the_sha256_of_the_bytes_or_none(tmp_path):
    import hashlib

    path = tmp_path / "w"
    path.write_bytes(b"x" * (3 << 20))  # more than one read block
    assert artifacts.file_sha256(path) == hashlib.sha256(b"x" * (3 << 20)).hexdigest()
    assert artifacts.file_sha256(tmp_path) is None and artifacts.file_sha256(tmp_path / "missing") is None
