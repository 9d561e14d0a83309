"""The Fourier stage: a Fourier heat map per model (stress.perturb.fourier), fanned out over (frequency group, image shard).

Every frequency of the half-plane (514 for 32 x 32) is added, as a basis image of norm
`stress.fourier_norm`, to the same `stress.fourier_images` test images, a seeded subset; all
models see the very same perturbed images. Reads the evaluate stage's predictions.npz for the
clean correctness of those images; writes eval/fourier.json, eval/fourier.npz and the saved tasks
in eval/fourier_shards/. Recorded as stage "fourier" with `fourier_key`; --skip-stress and
--fourier-images 0 skip it.
"""

from __future__ import annotations

import time

import numpy as np

from stress.artifacts import RunFolder, config_key, write_json, write_npz
from stress.config import ExperimentConfig, model_names
from stress.data import Splits
from stress.driver.fanout import Executor, Task, run_resumable, shard_key, used_precision
from stress.driver.forward_plan import FOURIER_BATCH, compile_decision, fourier_bounds, frequency_groups
from stress.driver.stages import TRAINING_SECTIONS, StageOutcome, load_weights
from stress.report.statements import interval_text, number, signed

FOURIER_VERSION = 2  # 2: each model's margin of its most sensitive band over the next one
FOURIER_SHARD_VERSION = 1  # the saved tasks' own computation, unchanged since version 1 of the stage
FOURIER_OPTIONS = ("fourier_images", "fourier_norm")  # stress.* the stage reads; the sharding does not change its results


def fourier_key(config: ExperimentConfig) -> str:
    """The Fourier stage's inputs: the trained models' options and the Fourier options (the weights are checked apart)."""
    return config_key(config.to_dict(), TRAINING_SECTIONS, {"stress": FOURIER_OPTIONS}, FOURIER_VERSION)


def fourier_shard_key(config: ExperimentConfig) -> str:
    """What the saved tasks were computed from (the stage's summary can change without them)."""
    return config_key(config.to_dict(), TRAINING_SECTIONS, {"stress": FOURIER_OPTIONS}, FOURIER_SHARD_VERSION)


def heat_map_images(n_test: int, count: int, seed: int) -> np.ndarray:
    """The test images of the heat map: `count` of them, drawn without replacement by the run seed, in index order."""
    rng = np.random.default_rng([seed, 0xF0])
    return np.sort(rng.choice(n_test, size=min(count, n_test), replace=False))


def fourier_stage(run: RunFolder, config: ExperimentConfig, splits: Splits, executor: Executor, log) -> StageOutcome:
    """Per-frequency error rates of every model under Fourier-basis perturbations, summarised by band and radius."""
    from stress.analyses.fourier import BANDS, summarise_fourier
    from stress.evaluate.shards import fourier_shard
    from stress.perturb.fourier import MAX_SIDE, frequencies

    s = config.stress
    if s.skip_stress or s.fourier_images == 0:
        log("fourier: skipped (" + ("--skip-stress" if s.skip_stress else "--fourier-images 0") + ")")
        return StageOutcome("fourier", ran=False)
    names = model_names(config)
    key, weights_id = fourier_key(config), run.weights_digest(names)
    if run.stage_done("fourier", key, weights_id):
        log("fourier: already finished: skipped")
        return StageOutcome("fourier", ran=False)
    started = time.perf_counter()
    height, width = splits.test_x.shape[-2:]
    if max(height, width) > MAX_SIDE:
        reason = f"images of {height} x {width}: a full heat map has about {height * width // 2} frequencies (only up to {MAX_SIDE} x {MAX_SIDE})"
        log(f"fourier: skipped ({reason})")
        write_json(run.path("eval", "fourier.json"), {"skipped": reason})
        run.mark_done("fourier", time.perf_counter() - started, key, weights=weights_id)
        return StageOutcome("fourier", ran=True, seconds=time.perf_counter() - started)
    chosen = heat_map_images(len(splits.test_y), s.fourier_images, config.train.seed)
    images, labels = splits.test_x[chosen], splits.test_y[chosen]
    freqs = frequencies(height, width)
    model_config = config.to_dict()["model"]
    weights = load_weights(run, model_config, names)
    weights_ref, images_ref, labels_ref = executor.put(weights), executor.put(images), executor.put(labels)
    bounds = fourier_bounds(config, len(splits.test_y), executor)
    groups = frequency_groups(freqs)
    compiled, why = compile_decision(config, len(splits.test_y), executor)
    log(f"fourier: torch.compile {'on' if compiled else 'off'} ({why})")
    options = {"seed": config.train.seed, "norm": s.fourier_norm, "precision": config.train.precision, "compile": compiled,
               "batch_size": FOURIER_BATCH}
    tasks = [Task(f"f{g}_{start}_{stop}", (weights_ref, model_config, images_ref, labels_ref, start, stop, group), options,
                  f"fourier{g}:{start}-{stop}") for g, group in enumerate(groups) for start, stop in bounds]
    log(f"fourier: {len(freqs)} frequencies x {len(chosen)} test images x {len(names)} model(s), basis images of norm "
        f"{s.fourier_norm:g} on the [0, 1] scale, in {len(tasks)} tasks")
    results = run_resumable(executor, fourier_shard, tasks, run.path("eval", "fourier_shards"), shard_key(run, fourier_shard_key(config)), config.resources, log,
                            announce=lambda reused, to_run: log(f"fourier: {reused} task(s) already saved, {to_run} to run") if reused else None)
    precision = used_precision(list(results.values()), "fourier", config.train.precision, log)
    correct = {v: np.concatenate([np.concatenate([results[f"f{g}_{start}_{stop}"][v] for start, stop in bounds], axis=1)
                                  for g in range(len(groups))], axis=0) for v in names}
    with np.load(run.path("eval", "predictions.npz")) as predictions:
        clean = {v: predictions[f"{v}_correct"][chosen].astype(bool) for v in names}
    record, arrays = summarise_fourier(clean, correct, freqs, height, width, names, s.fourier_norm)
    record["precision"] = precision
    record["seconds"] = time.perf_counter() - started
    write_npz(run.path("eval", "fourier.npz"), indices=chosen, **arrays)
    write_json(run.path("eval", "fourier.json"), record)
    for v in names:
        m = record["models"][v]
        bands = ", ".join(f"{b} {number(m['by_band'][b]['mean'], 3)}" for b in BANDS if b in m["by_band"])
        margin = m["margin"]
        lead = (f"; highest in the {m['most_sensitive_band']} band, {signed(margin['mean'], 3)} "
                f"{interval_text(margin['low'], margin['high'], 3)} over the {margin['over']} band" if margin else "")
        log(f"[{v}] Fourier heat map: error {number(m['mean_error']['mean'], 3)} (clean {number(m['clean_error'], 3)}); "
            f"by band {bands}{lead}")
    for other, d in record.get("differences", {}).items():
        parts = [f"{b} {signed(x['mean'], 3)} {interval_text(x['low'], x['high'], 3)}" + ("*" if x["significant"] else "")
                 for b, x in d["by_band"].items()]
        log(f"fourier: {other} - {d['reference']} error by band: {', '.join(parts)} "
            f"(unadjusted 95% CI over {len(chosen)} images; * significant after Holm over {len(parts)} bands)")
    run.mark_done("fourier", record["seconds"], key, weights=weights_id, tasks=len(tasks), compiled=compiled, compile_reason=why,
                  precision=precision)
    return StageOutcome("fourier", ran=True, seconds=record["seconds"])
