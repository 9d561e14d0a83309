"""Checks on user-given paths that every reader shares."""

from __future__ import annotations

import stat
from pathlib import Path

from stress.errors import StressError


def expand(path: str | Path, what: str) -> Path:
    """`Path(path).expanduser()`, with a one-line error for a `~user` that does not exist."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise StressError(f"{path}: cannot expand '~' ({what}: no such user or no home folder)") from None


def check_regular_file(path: Path, what: str) -> None:
    """Refuse special files (FIFOs, devices, sockets): reading one can block forever.

    Folders pass (a reader that wants a folder checks its files); a missing or unreadable
    path passes too, so that the reader reports it in its own words.
    """
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise StressError(f"{path}: not a regular file ({what} must be a file, not a FIFO, device or socket)")


def checkpoint_file(path: str) -> Path:
    """The file --evaluate NAME=PATH names, refused in one line when it is missing or special (nothing is read)."""
    file = expand(path, "--evaluate")
    if not file.exists():
        raise StressError(f"{file}: no such checkpoint file (--evaluate NAME=CHECKPOINT)")
    check_regular_file(file, "--evaluate")
    return file
