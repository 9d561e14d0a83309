"""A sweep folder's summary.json, read and checked: a broken one is a one-line StressError naming the file."""

from __future__ import annotations

from pathlib import Path

from stress.artifacts import RunFolder, read_json
from stress.constants import VARIANTS
from stress.errors import StressError


def check_sweep_summary(summary, path: Path) -> dict:
    """The sweep summary, or a one-line StressError naming `path` if its structure is broken."""
    def broken(what: str) -> StressError:
        return StressError(f"{path}: not a valid sweep summary ({what})")

    if not isinstance(summary, dict) or summary.get("kind") != "sweep":
        raise broken('expected a JSON object with kind "sweep"')
    seeds, per_seed = summary.get("seeds"), summary.get("per_seed")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise broken("'seeds' is not a non-empty list of integers")
    if not isinstance(per_seed, dict) or any(not isinstance(per_seed.get(str(s)), dict) for s in seeds):
        raise broken("'per_seed' lacks an entry for a seed")
    if any(not isinstance(per_seed[str(s)].get(v), dict) for s in seeds for v in VARIANTS):
        raise broken(f"a 'per_seed' entry lacks one of the variants {', '.join(VARIANTS)}")
    for key in ("aggregate", "stability"):
        if summary.get(key) is not None and not isinstance(summary[key], dict):
            raise broken(f"'{key}' is neither an object nor null")
    return summary


def load_sweep_summary(root: RunFolder) -> dict:
    path = root.path("summary.json")
    return check_sweep_summary(read_json(path), path)
