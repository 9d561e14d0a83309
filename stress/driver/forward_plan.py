"""The forward passes of the stress and Fourier stages: how their work is cut into tasks and batches, and
whether torch.compile runs them (one decision for both stages).

The stages build their tasks from these plans; `compile_decision` counts the same plans' batches.
"""

from __future__ import annotations

from dataclasses import dataclass

from stress.config import ExperimentConfig, model_names
from stress.constants import CORRUPTIONS
from stress.driver.fanout import Executor, forward_batches, shard_bounds
from stress.perturb.shifts import list_shifts
from stress.perturb.tables import corruption_support
from stress.precision import resolve_compile

SHIFTS_PER_TASK = 6
STRESS_BATCH = 500  # images per forward pass in the stress tasks
FREQUENCIES_PER_TASK = 64  # Fourier-basis frequencies per Fourier task
FOURIER_BATCH = 500  # images per forward pass in the Fourier tasks


@dataclass(frozen=True)
class StressPlan:
    """What the stress stage evaluates: the cells, the test images [0, images), their shards and the task groups."""

    corruptions: list[str]
    severities: list[int]
    shifts: list[str]
    unsupported: str | None  # why the corruptions are left out, if they are
    images: int
    bounds: list[tuple[int, int]]
    groups: dict[str, list[tuple[str, int]]]  # task group -> its (corruption, severity) or (shift, 0) cells

    def forward_batches(self, models: int) -> int:
        return forward_batches(self.bounds, sum(len(p) for p in self.groups.values()), models, STRESS_BATCH)


def stress_plan(config: ExperimentConfig, n_test: int, executor: Executor) -> StressPlan:
    s = config.stress
    corruptions, severities, shifts = list(s.corruptions or CORRUPTIONS), list(s.severities), list_shifts()
    unsupported = corruption_support(config.model.image_size)
    if unsupported:
        corruptions = []
    n = n_test if s.stress_limit == 0 else min(s.stress_limit, n_test)
    groups = {c: [(c, sev) for sev in severities] for c in corruptions}
    for i in range(0, len(shifts), SHIFTS_PER_TASK):
        groups[f"shifts{i // SHIFTS_PER_TASK}"] = [(name, 0) for name in shifts[i : i + SHIFTS_PER_TASK]]
    return StressPlan(corruptions, severities, shifts, unsupported, n, shard_bounds(n, s.shards or executor.slots(config.resources)), groups)


def fourier_bounds(config: ExperimentConfig, n_test: int, executor: Executor) -> list[tuple[int, int]]:
    """The Fourier tasks' shards of the heat map's images (stress.fourier_images of the n_test, at most)."""
    return shard_bounds(min(config.stress.fourier_images, n_test), config.stress.shards or executor.slots(config.resources))


def frequency_groups(freqs: list) -> list[list]:
    """The heat map's frequencies cut into the Fourier tasks' groups."""
    return [freqs[i : i + FREQUENCIES_PER_TASK] for i in range(0, len(freqs), FREQUENCIES_PER_TASK)]


def fourier_forward_batches(config: ExperimentConfig, n_test: int, executor: Executor) -> int:
    """Forward batches of every model in the Fourier stage's tasks (0 where the stage does not run)."""
    from stress.evaluate.shards import fourier_batches
    from stress.perturb.fourier import MAX_SIDE, frequencies

    s, side = config.stress, config.model.image_size
    if s.skip_stress or s.fourier_images == 0 or side > MAX_SIDE:
        return 0
    per_model = sum(fourier_batches(stop - start, len(group), FOURIER_BATCH)
                    for group in frequency_groups(frequencies(side, side)) for start, stop in fourier_bounds(config, n_test, executor))
    return per_model * len(model_names(config))


def compile_decision(config: ExperimentConfig, n_test: int, executor: Executor) -> tuple[bool, str]:
    """Whether the stress and Fourier stages compile their forward passes, and why (stress.precision.resolve_compile).

    One decision for both: torch caches the compiled model per worker process, so a worker that runs
    both stages' tasks compiles once, and the work that pays for it is both stages' forward batches.
    """
    models = len(model_names(config))
    batches = 0 if config.stress.skip_stress else stress_plan(config, n_test, executor).forward_batches(models)
    batches += fourier_forward_batches(config, n_test, executor)
    return resolve_compile(config.stress.compile, config.model.name, executor.task_gpus(config.resources),
                           batches / max(1, executor.slots(config.resources)))
