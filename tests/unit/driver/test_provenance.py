"""The manifest's source record: the commit of the code's checkout and whether tracked files differ from it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from stress.driver.provenance import source_state
from stress.report.blocks import MISSING
from stress.report.setup_text import commit_text

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
