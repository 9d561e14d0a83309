"""The manifest's source record: the commit of the code's checkout and whether tracked files differ from it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from stress.driver.provenance import hardware, source_state
from stress.report.blocks import MISSING
from stress.report.setup_text import commit_text, hardware_text

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=folder, check=True, capture_output=True)


def head_commit(folder: Path) -> str:
    """The checkout's commit read from .git's files, not through git: HEAD names a ref, the ref file holds the hash."""
    head = (folder / ".git" / "HEAD").read_text().strip()
    return (folder / ".git" / head.removeprefix("ref: ")).read_text().strip() if head.startswith("ref: ") else head


def test_source_state_reads_the_commit_and_changes_to_tracked_files_only(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "module.py").write_text("x = 1\n")
    git(tmp_path, "add", "module.py")
    git(tmp_path, "commit", "-q", "-m", "first")
    (tmp_path / "package").mkdir()
    assert source_state(tmp_path / "package") == {"git_commit": head_commit(tmp_path), "git_modified": False}
    (tmp_path / "notes.txt").write_text("untracked\n")  # an untracked file is not part of the code that ran
    assert source_state(tmp_path)["git_modified"] is False
    (tmp_path / "module.py").write_text("x = 2\n")
    assert source_state(tmp_path) == {"git_commit": head_commit(tmp_path), "git_modified": True}
    git(tmp_path, "commit", "-q", "-am", "second")
    second = source_state(tmp_path)
    assert second == {"git_commit": head_commit(tmp_path), "git_modified": False} and len(second["git_commit"]) == 40


def test_outside_a_checkout_both_are_unknown(tmp_path):
    assert source_state(tmp_path) == {"git_commit": None, "git_modified": None}


def test_the_setup_row_says_when_the_code_had_uncommitted_changes():
    assert commit_text({"git_commit": "abc", "git_modified": False}) == "abc"
    assert commit_text({"git_commit": "abc"}) == "abc"  # manifests from before the field
    assert commit_text({"git_commit": "abc", "git_modified": True}) == "abc (with uncommitted changes to tracked files)"
    assert commit_text({"git_commit": None, "git_modified": None}) == MISSING


def test_the_setup_row_names_the_hardware_in_words():
    zen4 = {"platform": "Linux-6.18.44-x86_64-with-glibc2.36", "processor": "x86_64", "cpu_count": 2, "cpu_model": "AMD EPYC",
            "cpu_bf16_flags": "avx512_bf16", "cpu_signature": "family 25, model 17, stepping 1"}  # a real run's manifest
    assert hardware_text(zen4) == ("AMD EPYC (CPU family 25, model 17, stepping 1); 2 logical CPUs; bf16 units avx512_bf16; "
                                   "no GPU on the driver; Linux-6.18.44-x86_64-with-glibc2.36")
    gpu = {"platform": "Linux-5.15", "processor": "x86_64", "cpu_count": 16, "cpu_model": "Intel Xeon", "cpu_bf16_flags": "none",
           "gpu": "NVIDIA H200"}
    assert hardware_text(gpu) == "Intel Xeon; 16 logical CPUs; no bf16 units; GPU NVIDIA H200; Linux-5.15 x86_64"
    assert hardware_text({"cpu_model": "X", "cpu_count": 4, "numa_nodes": 2}).endswith("; numa_nodes 2")  # unknown keys kept
    assert hardware_text({}) == MISSING
    # Every key this machine's manifest records is put in words: no raw manifest key reaches the report.
    text = hardware_text(hardware())
    assert not any(key in text for key in hardware()), text
