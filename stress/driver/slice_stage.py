"""The slices stage: penultimate-layer embeddings over test shards, then failure slices per model.

Reads the evaluate stage's predictions.npz and characteristics.npz; writes eval/slices.json,
eval/slices.npz and the saved embedding tasks in eval/embedding_shards/ (stress.analyses.slices
says how slices are found and tested). Recorded as stage "slices" with `slices_key`.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from stress.artifacts import RunFolder, config_key, write_json, write_npz
from stress.config import ExperimentConfig, model_names
from stress.data import Splits
from stress.driver.fanout import Executor, Task, merge_shards, run_resumable, shard_bounds, shard_key, used_precision
from stress.driver.stages import TRAINING_SECTIONS, StageOutcome, load_model, load_weights
from stress.report.statements import number

SLICES_VERSION = 4  # 2: conjunctions no worse than a parent are left out; 3: clusters named; 4: parents recorded
SLICES_OPTIONS = ("slice_min_size",)  # stress.* the stage reads (its inputs are otherwise the weights and the test set)


EMBEDDING_VERSION = 1  # the embedding tasks' own computation, apart from how slices are found


def embedding_key(config: ExperimentConfig) -> str:
    """What the saved embedding tasks were computed from: the trained models' options (the weights are checked apart)."""
    return config_key(config.to_dict(), TRAINING_SECTIONS, None, EMBEDDING_VERSION)


def slices_key(config: ExperimentConfig) -> str:
    """The slices stage's inputs: the trained models' options and the slice options (the weights are checked apart)."""
    return config_key(config.to_dict(), TRAINING_SECTIONS, {"stress": SLICES_OPTIONS}, SLICES_VERSION)


def slices_stage(run: RunFolder, config: ExperimentConfig, splits: Splits, executor: Executor, log) -> StageOutcome:
    """Failure slices per model from the evaluate stage's results and a fan-out of penultimate-layer embeddings."""
    from stress.analyses.slices import candidate_slices, cluster_embeddings, find_slices, mean_hue, project
    from stress.evaluate.shards import embed_shard
    from stress.models.layers import embedding_layer

    names = model_names(config)
    key, weights_id = slices_key(config), run.weights_digest(names)
    if run.stage_done("slices", key, weights_id):
        log("slices: already finished: skipped")
        return StageOutcome("slices", ran=False)
    started = time.perf_counter()
    images, labels = splits.test_x, splits.test_y
    n, model_config = len(labels), config.to_dict()["model"]
    weights = load_weights(run, model_config, names)
    layer = embedding_layer(load_model(weights[names[0]], model_config, torch.device("cpu")))
    embeddings: dict[str, np.ndarray] = {}
    precision = None  # no embeddings, no forward passes
    if layer is not None:
        weights_ref, images_ref = {v: executor.put(w) for v, w in weights.items()}, executor.put(images)
        bounds = shard_bounds(n, config.stress.shards or executor.slots(config.resources))
        tasks = [Task(f"{v}_{start}_{stop}", (weights_ref[v], model_config, images_ref, start, stop), {"precision": config.train.precision},
                      f"{v}:{start}-{stop}") for v in names for start, stop in bounds]
        log(f"slices: embeddings (input of {layer}) of {len(names)} model(s) x {len(bounds)} shards")
        results = run_resumable(executor, embed_shard, tasks, run.path("eval", "embedding_shards"), shard_key(run, embedding_key(config)),
                                config.resources, log)
        precision = used_precision(list(results.values()), "slices", config.train.precision, log)
        embeddings = {v: merge_shards([results[f"{v}_{start}_{stop}"] for start, stop in bounds], n)["embedding"] for v in names}
    seconds_embed = time.perf_counter() - started
    with np.load(run.path("eval", "predictions.npz")) as table:
        predictions = {v: (table[f"{v}_correct"].astype(bool), table[f"{v}_predicted"]) for v in names}
    with np.load(run.path("eval", "characteristics.npz")) as table:
        characteristics = {k: table[k] for k in table.files}
    hues = mean_hue(images)
    record: dict = {"models": {}, "embedding_layer": layer}
    arrays: dict[str, np.ndarray] = {"hue": hues}
    for v in names:
        correct, predicted = predictions[v]
        usable = layer is not None and bool(np.isfinite(embeddings[v]).all())  # a diverged training gives inf/NaN features
        clusters = cluster_embeddings(embeddings[v], config.train.seed, min_size=config.stress.slice_min_size) if usable else None
        candidates = candidate_slices(labels, config.data.class_names, characteristics, hues, clusters)
        found = find_slices(correct, candidates, labels, predicted, config.data.class_names, min_size=config.stress.slice_min_size)
        masks = [s.pop("mask") for s in found["slices"]]
        arrays[f"{v}_top_masks"] = np.stack(masks) if masks else np.zeros((0, n), dtype=bool)
        if usable:
            projection, variance = project(embeddings[v], config.train.seed)
            arrays[f"{v}_projection"], arrays[f"{v}_cluster"] = projection, clusters
            found["embedding"] = {"layer": layer, "dimensions": int(embeddings[v].shape[1]), "clusters": int(clusters.max() + 1),
                                  "projection": "PCA of the standardised embeddings", "projection_variance": variance}
        elif layer is not None:
            found["embedding"] = {"skipped": f"{v}'s embeddings are not finite (a diverged training?): no cluster slices"}
        else:
            found["embedding"] = {"skipped": "the model has no nn.Linear layer whose input is an embedding: no cluster slices"}
        record["models"][v] = found
        top = found["slices"][0] if found["slices"] else None
        log(f"[{v}] failure slices: {found['kept']} of {found['tried']} worse than overall (error {number(found['overall_error'], 4)})"
            + (f"; top: {top['name']} error {number(top['error_rate'], 3)} on {top['size']} images, lift {number(top['lift'], 2)}" if top else ""))
    record["seconds"] = {"embeddings": seconds_embed, "slices": time.perf_counter() - started - seconds_embed}
    write_npz(run.path("eval", "slices.npz"), **arrays)
    write_json(run.path("eval", "slices.json"), record)
    seconds = time.perf_counter() - started
    run.mark_done("slices", seconds, key, weights=weights_id, precision=precision)
    return StageOutcome("slices", ran=True, seconds=seconds)
