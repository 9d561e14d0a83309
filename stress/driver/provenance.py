"""What a run's manifest says about where and how it ran: the commit, the driver's hardware, and the precision asked
for and used (stress.driver.pipeline writes it)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from stress.artifacts import RunFolder


PACKAGE = Path(__file__).resolve().parents[1]  # stress/: where the code that runs was imported from


def _git(folder: Path, *args: str) -> str | None:
    """git's stdout in `folder`, or None where git or a checkout is missing."""
    try:
        out = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def source_state(folder: Path = PACKAGE) -> dict:
    """{"git_commit": the checkout's commit, "git_modified": whether tracked files differ from it} of the code in
    `folder`, both None outside a git checkout. A run takes it when it starts: a commit made while it runs is not
    the code it ran."""
    commit = (_git(folder, "rev-parse", "HEAD") or "").strip() or None
    # --no-optional-locks: status would otherwise refresh the index under index.lock, and a user's own git command
    # at that moment would fail on the lock.
    status = _git(folder, "--no-optional-locks", "status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_modified": None if status is None else bool(status.strip())}


def hardware() -> dict:
    """The driver's machine: the CPU model and its bf16 units, which the stage times depend on, and its GPU."""
    import torch

    from stress.precision import cpu_bf16_flags, cpu_model, cpu_signature

    info = {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(), "cpu_bf16_flags": ", ".join(cpu_bf16_flags()) or "none"}
    if signature := cpu_signature():
        info["cpu_signature"] = signature
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


PRECISION_STAGES = ("evaluate", "slices", "stress", "fourier", "texture", "attack", "train_audit")  # their records say


def precision_record(requested: str, run: RunFolder) -> dict:
    """The --precision asked for, what it resolves to on this machine's devices (stress.precision), and what each analysis
    stage's tasks ran in ("auto" resolves on each task's device: stress.driver.fanout.used_precision; stages that did not
    run, or finished before the record, are left out)."""
    import torch

    from stress.precision import cpu_has_fast_bf16, resolve_precision

    resolved = {"cpu": resolve_precision(requested, "cpu")}
    if torch.cuda.is_available():
        resolved["cuda"] = resolve_precision(requested, "cuda")
    stages = {stage: (run.stage_record(stage) or {}).get("precision") for stage in PRECISION_STAGES}
    return {"requested": requested, "resolved": resolved, "cpu_fast_bf16": cpu_has_fast_bf16(),
            "stages": {stage: value for stage, value in stages.items() if value}}
