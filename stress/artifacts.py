"""The run folder: atomic writes, JSON reading with clear errors, and explicit stage completion.

Layout of a run folder (stable; later stages add files, never move them):

    config.json            the resolved ExperimentConfig
    manifest.json          versions, git commit, dataset fingerprint, resources, stage times
    summary.json           machine-readable results (schema_version, run, dataset, variants, ...)
    split.json             validation indices carved from the training set
    stages/<name>.json     one file per finished stage: the record that it completed
    train/<variant>/...    Ray Train storage (per-epoch checkpoints; resumed by name)
    variants/<variant>/    history.json, model.pt (final weights + config)
    eval/                  per-image predictions, shard outputs, Grad-CAM maps of the cases
    figures/*.png          every figure of the report
    report.html, report.md

Every file is written to a temporary name in the same folder and renamed into place,
so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from stress.errors import StressError
from stress.paths import expand

SCHEMA_VERSION = 1


def _json_default(value: Any) -> Any:
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _clean_floats(value: Any) -> Any:
    # JSON has no NaN/Infinity: write them as null so every reader can parse the file.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_floats(v) for v in value]
    return value


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` via a temporary file in the same folder and an atomic rename.

    A path that cannot be written (its folder is a file, the path is a folder, the disk is
    full) is a one-line StressError naming it; the old file, if any, is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise StressError(f"{path}: cannot write ({exc.strerror}: {exc.filename})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StressError(f"{path}: cannot write ({exc.strerror})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, value: Any) -> Path:
    """Atomically write `value` as indented JSON (NaN/inf become null)."""
    text = json.dumps(_clean_floats(json.loads(json.dumps(value, default=_json_default))), indent=2, sort_keys=False)
    return write_bytes_atomic(path, (text + "\n").encode())


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing or corrupt file is a one-line StressError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StressError(f"{path}: missing") from None
    except json.JSONDecodeError as exc:
        raise StressError(f"{path}: corrupt JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise StressError(f"{path}: corrupt JSON (not UTF-8 text)") from None
    except OSError as exc:
        raise StressError(f"{path}: cannot read ({exc.strerror})") from None


def file_sha256(path: str | Path) -> str | None:
    """SHA-256 of a regular file's bytes, or None if `path` is not a readable regular file."""
    import hashlib

    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def read_record(path: str | Path, what: str, keys: tuple[str, ...] = (), variants: tuple[str, ...] = ()) -> dict:
    """`read_json` of a file that must hold a JSON object with `keys`; each of `variants` present must be an object.

    A file of the wrong structure (a list, a number, a variant entry that is a string) is a
    one-line StressError naming it, rather than a TypeError wherever it is first indexed.
    """
    path = Path(path)
    value = read_json(path)
    if not isinstance(value, dict):
        raise StressError(f"{path}: not a valid {what} (expected a JSON object, got {type(value).__name__})")
    missing = [k for k in keys if k not in value]
    if missing:
        raise StressError(f"{path}: not a valid {what} (no {', '.join(repr(k) for k in missing)})")
    for name in variants:
        if name in value and not isinstance(value[name], dict):
            raise StressError(f"{path}: not a valid {what} (the {name!r} entry is a {type(value[name]).__name__}, not an object)")
    return value


def write_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """Atomically write a compressed .npz."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return write_bytes_atomic(path, buffer.getvalue())


def save_torch(path: str | Path, obj: Any) -> Path:
    """Atomically torch.save `obj` (plain tensors, dicts, lists and numbers only, so weights_only loading works)."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes_atomic(path, buffer.getvalue())


def load_torch(path: str | Path) -> Any:
    """torch.load with weights_only=True: no arbitrary pickles are executed."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise StressError(f"{path}: missing") from None
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign file
        raise StressError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None


def config_key(config_dict: dict, sections: tuple[str, ...], fields: dict[str, tuple[str, ...]] | None = None,
               version: int | None = None) -> str:
    """A short hash of the config sections (and single `fields` of other sections) a stage depends on.

    fields: {"stress": ("num_cases", ...)} adds just those keys of a section. version: the
    stage's code version; bumping it when a stage's computation changes makes old records
    and saved shards of that stage stale.
    """
    import hashlib

    from stress.config import without_later_defaults

    config_dict = without_later_defaults(config_dict)
    chosen: dict = {k: config_dict[k] for k in sections}
    for section, names in (fields or {}).items():
        # A LATER_FIELDS option at its old-behaviour value is absent: left out, so old keys hold.
        chosen[f"{section}:fields"] = {name: config_dict[section][name] for name in names if name in config_dict[section]}
    if version is not None:
        chosen["version"] = version
    text = json.dumps(chosen, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _process_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # unknown: never assume it is dead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_owner() -> dict:
    """What a run lock records of its writer: owner, host, PID and start time."""
    import getpass
    import socket

    return {"owner": getpass.getuser(), "host": socket.gethostname(), "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def check_lock_holder(holder: dict, mine: dict, where: str, lock: str, hint: str = "") -> str:
    """"mine" if this process holds the lock, "stale" if its owner is dead on this host; else a one-line refusal.

    `holder` is the lock's content ({} when unreadable or not an object: an owner that cannot
    be checked); `where` names the run in the message and `lock` the lock file.
    """
    if holder.get("pid") == mine["pid"] and holder.get("host") == mine["host"]:
        return "mine"
    if holder.get("host") == mine["host"] and not _process_alive(holder.get("pid")):
        return "stale"
    if not holder:
        raise StressError(f"{lock} exists but names no owner (another job may be starting, or it is damaged); "
                          "if no job uses this run, delete it")
    raise StressError(
        f"{where} is in use by {holder.get('owner', '?')}@{holder.get('host', '?')} pid {holder.get('pid', '?')} "
        f"since {holder.get('started', '?')}; wait for it to finish or use another --run-name{hint}"
    )


def existing_run_folder(run_dir: str | Path) -> Path:
    """The folder RUN_DIR names, refused in one line unless it is a finished run's or sweep's (holds summary.json)."""
    folder = expand(str(run_dir), "RUN_DIR")
    if not folder.is_dir():
        raise StressError(f"{folder}: no such run folder")
    if not (folder / "summary.json").is_file():
        raise StressError(f"{folder}: not a run folder (no summary.json)")
    return folder


class RunFolder:
    """Paths and stage records of one run folder."""

    def __init__(self, root: str | Path):
        self.root = expand(root, "run folder").resolve()

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def variant_dir(self, variant: str) -> Path:
        return self.root / "variants" / variant

    def check_writable(self) -> None:
        """Fail early if the run folder could not be created or written, without creating anything."""
        existing = self.root
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            reason = "a file is in the way" if existing.exists() and not existing.is_dir() else "permission denied"
            raise StressError(f"{self.root}: output folder is not writable ({reason} at {existing})")

    def ensure_writable(self) -> None:
        """Create the folder and prove it is writable, before any long work starts."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StressError(f"{self.root}: output folder is not writable ({exc.strerror})") from None

    LOCK = "run.lock"

    def acquire_lock(self, warn=print) -> None:
        """Make this process the run folder's one writer, or refuse in one line naming the owner.

        The lock file holds owner, host, PID and start time and is created exclusively. A lock
        whose owner process is dead on this host is stale: it is taken over with a warning. A
        lock held from another host cannot be checked from here and is refused; delete
        run.lock by hand once that job is gone.
        """
        path = self.root / self.LOCK
        mine = lock_owner()
        for _ in range(2):
            try:
                descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._lock_holder(path)
                if check_lock_holder(holder, mine, str(self.root), str(path)) == "mine":
                    return  # this process holds it already
                warn(f"warning: {path}: taking over a stale lock of pid {holder.get('pid')} (no longer running)")
                path.unlink(missing_ok=True)
                continue
            with os.fdopen(descriptor, "w") as handle:
                json.dump(mine, handle)
            return
        raise StressError(f"{path}: could not take the run lock")

    def release_lock(self) -> None:
        """Remove the lock if this process holds it."""
        path = self.root / self.LOCK
        holder = self._lock_holder(path) if path.is_file() else {}
        if holder.get("pid") == os.getpid():
            path.unlink(missing_ok=True)

    @staticmethod
    def _lock_holder(path: Path) -> dict:
        try:
            holder = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}  # half-written or unreadable: treated as held by an unknown owner
        return holder if isinstance(holder, dict) else {}

    def weights_digest(self, variants: tuple[str, ...] = ("baseline", "augmented")) -> str:
        """The trained weights a stage reads, as `variant:<sha256 prefix>` of each model.pt ("missing" if absent)."""
        return ",".join(f"{v}:{(file_sha256(self.variant_dir(v) / 'model.pt') or 'missing')[:16]}" for v in variants)

    def stage_done(self, name: str, key: str | None = None, weights: str | None = None) -> bool:
        """True if stage `name` finished, and (when given) with the same inputs `key` and the same `weights`.

        A record written before weights were recorded counts as matching any weights.
        """
        record = self.stage_record(name)
        if record is None or (key is not None and record.get("key") != key):
            return False
        return weights is None or record.get("weights") in (None, weights)

    def stage_record(self, name: str) -> dict | None:
        path = self.root / "stages" / f"{name}.json"
        if not path.is_file():
            return None
        try:
            record = read_json(path)
        except StressError:
            record = None
        # A corrupt or wrongly structured record means the stage is not known to be done: it re-runs.
        return record if isinstance(record, dict) else None

    def mark_done(self, name: str, seconds: float, key: str | None = None, **details: Any) -> None:
        """Record that stage `name` finished; written last, after all of the stage's files.

        `key` identifies the stage's inputs (see `config_key`): a record with another key
        does not count as done, so changed options re-run the stage.
        """
        write_json(
            self.root / "stages" / f"{name}.json",
            {"stage": name, "key": key, "seconds": seconds, "finished": time.time(), **details},
        )

    def clear_stage(self, name: str) -> None:
        (self.root / "stages" / f"{name}.json").unlink(missing_ok=True)
