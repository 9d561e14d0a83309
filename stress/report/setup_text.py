"""The setup table's precision, torch.compile, git commit and hardware rows, for the run report and the sweep report."""

from __future__ import annotations

from stress.artifacts import read_json
from stress.report.blocks import MISSING


def precision_text(train: dict, manifest: dict, variants: dict | None = None, stages: dict[str, list[str]] | None = None) -> str:
    """The precision option, what it resolves to on the driver's devices, what the trainers ran in and what the analysis
    stages' tasks ran in (each resolved it on its own device: GPU workers from a driver without a GPU); runs from before
    the option were fp32. `stages`: stage -> what its tasks ran in (every seed's, in a sweep); else the manifest's."""
    recorded = manifest.get("precision")
    if not recorded:
        return train.get("precision", "fp32")
    resolved = ", ".join(f"{value} on {device}" for device, value in recorded.get("resolved", {}).items())
    trained = sorted({f"{v['precision']} on {v.get('device') or MISSING}" for v in (variants or {}).values()
                      if isinstance(v, dict) and v.get("precision")})
    if stages is None:
        stages = {stage: [value] for stage, value in (recorded.get("stages") or {}).items()}
    return (f"{recorded.get('requested', MISSING)} (the driver resolves it to {resolved})" + (f"; training ran in {' and '.join(trained)}" if trained else "")
            + analyses_text(stages))


STAGE_NAMES = {"evaluate": "evaluation", "slices": "slices", "stress": "stress", "fourier": "Fourier", "texture": "texture",
               "attack": "attacks", "train_audit": "train-label audit"}  # manifest precision.stages keys -> names in the text


def analyses_text(stages: dict[str, list[str]]) -> str:
    """"; the analyses in bf16" where every stage's tasks ran in one precision, else which ran in which (a stage whose
    tasks or seeds differ is named under each); "" where no stage recorded it."""
    by_value: dict[str, list[str]] = {}
    for stage, values in stages.items():
        for value in sorted(set(values)):
            by_value.setdefault(value, []).append(STAGE_NAMES.get(stage, stage))
    if len(by_value) <= 1:
        return "".join(f"; the analyses in {value}" for value in by_value)
    return "; the analyses in " + " and ".join(f"{value} ({', '.join(names)})" for value, names in sorted(by_value.items()))


def seeds_precision(run, seeds: list[int]) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """What each seed's trainers ran in (seed/variant -> its summary.json entry) and what each stage's tasks ran in over
    the seeds (stage -> values, from each seed's manifest.json): trials may land on different nodes."""
    trained, stages = {}, {}
    for seed in seeds:
        folder = f"seed_{seed}"
        if run.path(folder, "summary.json").is_file():
            trained |= {f"{seed}/{v}": entry for v, entry in read_json(run.path(folder, "summary.json")).get("variants", {}).items()}
        if run.path(folder, "manifest.json").is_file():
            recorded = read_json(run.path(folder, "manifest.json")).get("precision") or {}
            for stage, value in (recorded.get("stages") or {}).items():
                stages.setdefault(stage, []).append(value)
    return trained, stages


COMPILED_STAGES = {"stress": "stress", "fourier": "Fourier"}  # manifest compile keys -> names in the text


def compile_text(manifest: dict) -> str:
    """--compile and what the stress and Fourier stages did with it; runs from before the record say nothing."""
    recorded = manifest.get("compile")
    if not isinstance(recorded, dict):
        return MISSING
    requested = recorded.get("requested", MISSING)
    ran = {label: recorded[key] for key, label in COMPILED_STAGES.items() if recorded.get(key) is not None}
    if not ran:
        return f"{requested} (the stress and Fourier stages did not run)"
    why = str(recorded.get("why") or "").removeprefix(f"{requested}: ")
    parts = []
    for done in (True, False):
        stages = [label for label, value in ran.items() if value is done]
        if stages:
            parts.append(f"{' and '.join(stages)} {'stages' if len(stages) > 1 else 'stage'} {'compiled' if done else 'eager'}")
    return f"{requested}: {'; '.join(parts)}" + (f" ({why})" if why and not why.startswith("--compile") else "")


def commit_text(manifest: dict) -> str:
    """The commit the run's code came from, and whether its tracked files had changes that commit does not hold."""
    commit = manifest.get("git_commit")
    if not commit:
        return MISSING
    return commit + (" (with uncommitted changes to tracked files)" if manifest.get("git_modified") else "")


def hardware_text(hardware: dict) -> str:
    """The driver's machine (not the workers') in words: CPU model and generation, logical CPUs, bf16 units, GPU, operating system. Keys this
    function does not know are listed after it as they are, so a newer manifest loses nothing."""
    if not hardware:
        return MISSING
    known = {"cpu_model", "cpu_signature", "cpu_count", "cpu_bf16_flags", "gpu", "platform", "processor"}
    cpu = str(hardware.get("cpu_model") or "CPU model not recorded")
    if hardware.get("cpu_signature"):
        cpu += f" (CPU {hardware['cpu_signature']})"
    parts = [cpu]
    if hardware.get("cpu_count") is not None:
        parts.append(f"{hardware['cpu_count']} logical CPUs")
    if "cpu_bf16_flags" in hardware:
        flags = hardware["cpu_bf16_flags"]
        parts.append("no bf16 units" if flags in ("none", "") else f"bf16 units {flags}")
    parts.append(f"GPU {hardware['gpu']}" if hardware.get("gpu") else "no GPU on the driver")
    system = " ".join(str(hardware[k]) for k in ("platform", "processor") if hardware.get(k) and not (
        k == "processor" and str(hardware[k]) in str(hardware.get("platform", ""))))
    if system:
        parts.append(system)
    parts += [f"{k} {v}" for k, v in hardware.items() if k not in known]
    return "; ".join(parts)
