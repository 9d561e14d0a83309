"""Run folders on remote storage: s3://, gs:// and other URIs that pyarrow.fs understands.

A plain path (local disk or a shared filesystem mounted on every node) is used directly.
For a URI, the driver works in a local staging folder and mirrors it to the URI after
every stage; Ray Train writes its checkpoints to the URI itself. A re-run first copies
the run back from the URI, so resumption works the same way as on disk.

A mirror sends only what changed: the staging folder keeps a record (MIRROR_RECORD) of the
size and modification time of each file as it was last copied to or from the URI, and a file
that still matches its record is not sent again. Every write in a run folder replaces the file
(a temporary file, then a rename), so a changed file has a new modification time.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from stress.errors import StressError

SKIP_PARTS = ("train", "run.lock")  # Ray Train writes its checkpoints straight to storage; run.lock is this host's writer lock
MIRROR_RECORD = ".mirrored.json"  # in the staging folder only: {relative path: [size, mtime_ns]} as last copied


def _stamp(file: Path) -> list[int]:
    status = file.stat()
    return [status.st_size, status.st_mtime_ns]


def _read_record(local: Path) -> dict[str, list[int]]:
    """The mirror record; a missing or unreadable one is empty (everything is sent again)."""
    import json

    try:
        record = json.loads((local / MIRROR_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_record(local: Path, record: dict[str, list[int]]) -> None:
    from stress.artifacts import write_json

    write_json(local / MIRROR_RECORD, record)


def is_uri(location: str) -> bool:
    return "://" in location


def staging_folder(uri: str, run_name: str) -> Path:
    """The local mirror of `uri/run_name` on this machine."""
    safe = uri.replace("://", "_").replace("/", "_")
    return Path(tempfile.gettempdir()) / "stress-staging" / safe / run_name


def _filesystem(uri: str):
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # noqa: BLE001 - unknown scheme, missing credentials, bad bucket
        raise StressError(f"{uri}: unusable storage URI ({str(exc).splitlines()[0]})") from None


def _skipped(relative: str) -> bool:
    """Files a run folder's mirror leaves alone: Ray Train's own checkpoints, the host's lock, temporary files."""
    name = relative.rsplit("/", 1)[-1]
    return relative.split("/")[0] in SKIP_PARTS or name.endswith(".tmp") or relative == MIRROR_RECORD


def subfolders(location: str) -> list[str] | None:
    """Names of the folders directly in `location` (a path or a URI); None if `location` is not a folder."""
    if not is_uri(location):
        folder = Path(location).expanduser()
        if folder.exists() and not folder.is_dir():
            return []  # a file in the way: it "exists" for the caller, which then refuses to overwrite it
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else None
    import pyarrow.fs as pafs

    filesystem, path = _filesystem(location)
    try:
        if filesystem.get_file_info(path).type != pafs.FileType.Directory:
            return None
        entries = filesystem.get_file_info(pafs.FileSelector(path))
    except OSError as exc:
        raise StressError(f"{location}: cannot read storage ({str(exc).splitlines()[0]})") from None
    return sorted(e.base_name for e in entries if e.type == pafs.FileType.Directory)


def download(uri: str, local: Path, skip=None) -> bool:
    """Copy an existing run at `uri` into `local`; False if there is none yet.

    `skip(relative_path)` leaves more files out (a sweep's driver needs its trials' results, not
    their checkpoints). The files copied are recorded as in step with the URI; a URI that holds
    nothing clears the record, so the next mirror sends everything.
    """
    import pyarrow.fs as pafs

    filesystem, path = _filesystem(uri)
    info = filesystem.get_file_info(path)
    if info.type != pafs.FileType.Directory:
        if (local / MIRROR_RECORD).is_file():
            (local / MIRROR_RECORD).unlink()
        return False
    local.mkdir(parents=True, exist_ok=True)
    selector = pafs.FileSelector(path, recursive=True)
    record = {}
    for entry in filesystem.get_file_info(selector):
        relative = entry.path[len(path) :].lstrip("/")
        if entry.type != pafs.FileType.File or _skipped(relative) or (skip is not None and skip(relative)):
            continue
        target = local / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with filesystem.open_input_stream(entry.path) as source:
            target.write_bytes(source.read())
        record[relative] = _stamp(target)
    _write_record(local, record)
    return True


def upload(local: Path, uri: str) -> int:
    """Mirror the staging folder's files (not Ray Train's own checkpoints) to `uri`; returns how many were sent.

    Files that match the mirror record (unchanged since they were last copied either way) are not sent.
    """
    filesystem, path = _filesystem(uri)
    record = _read_record(local)
    sent = 0
    try:
        filesystem.create_dir(path, recursive=True)
        # Stage records go last, so storage never holds a record without its stage's files.
        for source in sorted(local.rglob("*"), key=lambda f: (f.relative_to(local).parts[0] == "stages", str(f))):
            relative = source.relative_to(local).as_posix()
            if not source.is_file() or _skipped(relative):
                continue
            stamp = _stamp(source)
            if record.get(relative) == stamp:
                continue
            filesystem.create_dir(f"{path}/{Path(relative).parent.as_posix()}", recursive=True)
            # Files arrive whole: object stores publish on close, and stage records are written last.
            with filesystem.open_output_stream(f"{path}/{relative}") as sink:
                sink.write(source.read_bytes())
            record[relative] = stamp
            sent += 1
    except OSError as exc:
        raise StressError(f"{uri}: cannot write to storage ({str(exc).splitlines()[0]})") from None
    finally:
        if local.is_dir():
            _write_record(local, record)
    return sent


def acquire_lock(uri: str, warn=print) -> str:
    """Take `uri/run.lock` for this process, or refuse in one line naming its owner; returns the lock's token.

    Object stores have no create-if-absent that pyarrow exposes, so the lock is written and
    then read back: of two jobs that write it at nearly the same moment, the one whose token
    is not read back refuses. A lock whose owner is a dead process on this host is taken over
    with a warning; one from another host cannot be checked from here and is refused.
    """
    import json
    import uuid

    from stress.artifacts import check_lock_holder, lock_owner

    filesystem, path = _filesystem(uri)
    lock = f"{path}/run.lock"
    mine = {**lock_owner(), "token": uuid.uuid4().hex}

    def holder() -> dict | None:
        try:
            with filesystem.open_input_stream(lock) as source:
                value = json.loads(source.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    try:
        current = holder()
        if current is not None:
            state = check_lock_holder(current, mine, uri, f"{uri}/run.lock", f" (if that job is gone, delete {uri}/run.lock)")
            if state == "mine":
                return current.get("token", "")
            warn(f"warning: {uri}/run.lock: taking over a stale lock of pid {current.get('pid')} (no longer running)")
        filesystem.create_dir(path, recursive=True)
        with filesystem.open_output_stream(lock) as sink:
            sink.write(json.dumps(mine).encode())
        if (holder() or {}).get("token") != mine["token"]:
            raise StressError(f"{uri} was locked by another job at the same moment; wait for it to finish or use another --run-name")
    except OSError as exc:
        raise StressError(f"{uri}: cannot write to storage ({str(exc).splitlines()[0]})") from None
    return mine["token"]


def release_lock(uri: str, token: str) -> None:
    """Delete `uri/run.lock` if it still holds `token` (a lock taken over by another job is left alone)."""
    import json

    filesystem, path = _filesystem(uri)
    lock = f"{path}/run.lock"
    try:
        with filesystem.open_input_stream(lock) as source:
            if json.loads(source.read()).get("token") == token:
                filesystem.delete_file(lock)
    except (OSError, ValueError, AttributeError):
        pass  # gone already, or not ours: nothing to release
