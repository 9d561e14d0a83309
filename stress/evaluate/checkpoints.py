"""Already-trained models: a checkpoint file read as a state dict and checked against the configured architecture."""

from __future__ import annotations

from pathlib import Path

import torch

from stress.artifacts import load_torch
from stress.errors import StressError
from stress.paths import checkpoint_file, expand


def state_dict_of(loaded, path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict, or the project's own model.pt ({"model": state dict, "config": ..., "variant": ...})."""
    if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
        loaded = loaded["model"]
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()):
        raise StressError(f"{path}: not a state dict (a mapping of parameter names to tensors, as model.state_dict() gives) "
                          "or a stress model.pt")
    return loaded


def read_checkpoint(path: str, model_config: dict) -> dict[str, torch.Tensor]:
    """The state dict in `path` (read with weights_only=True), after checking it loads into the configured model."""
    from stress.evaluate.shards import load_model

    file = checkpoint_file(path)
    state = state_dict_of(load_torch(file), file)
    try:
        load_model(state, model_config, torch.device("cpu"))
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StressError(f"{file}: does not fit --model {model_config.get('name')} ({first})") from None
    return state


def recorded_input_stats(paths: list[str]) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The input statistics (mean, std) that the checkpoints' training recorded, when every one is this project's
    model.pt and records them; None otherwise (a plain state dict does not say what its model was trained on).
    Checkpoints that record different statistics cannot share one run: StressError, asking for model.mean/std."""
    found: dict[tuple, list[str]] = {}
    for path in paths:
        file = expand(path, "--evaluate")
        if not file.is_file():
            return None  # read_checkpoint reports it
        loaded = load_torch(file)
        config = loaded.get("config") if isinstance(loaded, dict) else None
        model = config.get("model") if isinstance(config, dict) else None
        mean, std = (model.get("mean"), model.get("std")) if isinstance(model, dict) else (None, None)
        if not mean or not std:
            return None
        found.setdefault((tuple(float(m) for m in mean), tuple(float(s) for s in std)), []).append(str(file))
    if len(found) > 1:
        described = "; ".join(f"{files[0]}: mean {list(key[0])}, std {list(key[1])}" for key, files in found.items())
        raise StressError(f"--evaluate: the checkpoints were trained with different input statistics ({described}); "
                          "give the ones to use as model.mean and model.std in a --config file")
    return next(iter(found)) if found else None
