"""The browser stage: every confident failure's Grad-CAM under every model, for the report's failure browser.

After the evaluate stage. From eval/predictions.npz it takes, per model, the test images it gets
wrong with confidence >= 0.9 (stress.constants.CONFIDENT), most confident first, at most
`stress.browser_images` of them, and the union of those images over the models. For each image
and each model it computes the Grad-CAM of that model's predicted class and of the true class,
pooled to the Grad-CAM layer's own resolution (at most 16 x 16) and scaled to 0..255 per map, so
thousands of maps stay small enough to embed in report.html. Writes eval/browser.npz.

The maps are computed in the driver process, like the case maps of the evaluate stage: a few
thousand images take seconds on a CPU.
"""

from __future__ import annotations

import time

import numpy as np

from stress.artifacts import RunFolder, config_key, write_npz
from stress.config import ExperimentConfig, model_names
from stress.constants import CONFIDENT
from stress.data import Splits
from stress.driver.stages import TRAINING_SECTIONS, StageOutcome, load_weights

BROWSER_VERSION = 1
BROWSER_OPTIONS = ("browser_images", "cam_layer")
MAX_MAP_SIDE = 16


def confident_failures(correct: np.ndarray, confidence: np.ndarray, cap: int) -> np.ndarray:
    """Indices of the wrong predictions with confidence >= CONFIDENT, most confident first (ties by index), at most `cap`."""
    chosen = np.flatnonzero(~correct & (confidence >= CONFIDENT))
    order = np.lexsort((chosen, -confidence[chosen]))
    return chosen[order][:cap]


def pool_maps(maps: np.ndarray, side: tuple[int, int]) -> np.ndarray:
    """(N, H, W) float maps >= 0 -> (N, h, w) uint8: area-averaged to `side`, each map scaled so its maximum is 255.

    A map that is zero everywhere stays zero."""
    import torch
    import torch.nn.functional as F

    pooled = F.adaptive_avg_pool2d(torch.as_tensor(maps, dtype=torch.float32)[:, None], side)[:, 0].numpy()
    peak = pooled.reshape(len(pooled), -1).max(axis=1) if len(pooled) else np.zeros(0)
    scale = np.divide(255.0, peak, out=np.zeros_like(peak), where=peak > 0)
    return np.clip(np.rint(pooled * scale[:, None, None]), 0, 255).astype(np.uint8)


def browser_stage(run: RunFolder, config: ExperimentConfig, splits: Splits, log) -> StageOutcome:
    import torch

    from stress.analyses.gradcam import cam_resolution, gradcam_for_targets
    from stress.augment import input_stats, normalize
    from stress.evaluate.shards import load_model

    s, names = config.stress, model_names(config)
    if s.browser_images == 0 or not s.cam_layer:
        log(f"browser: skipped ({'--browser-images 0' if s.browser_images == 0 else 'no Grad-CAM layer'})")
        run.path("eval", "browser.npz").unlink(missing_ok=True)
        return StageOutcome("browser", ran=False)
    key = config_key(config.to_dict(), TRAINING_SECTIONS, {"stress": BROWSER_OPTIONS}, BROWSER_VERSION)
    weights_id = run.weights_digest(names)
    if run.stage_done("browser", key, weights_id):
        log("browser: already finished: skipped")
        return StageOutcome("browser", ran=False)
    started = time.perf_counter()
    with np.load(run.path("eval", "predictions.npz")) as predictions:
        per_model = {v: confident_failures(predictions[f"{v}_correct"], predictions[f"{v}_confidence"], s.browser_images) for v in names}
        predicted = {v: predictions[f"{v}_predicted"] for v in names}
    indices = np.unique(np.concatenate([per_model[v] for v in names])).astype(np.int64)
    images, labels = splits.test_x[indices], splits.test_y[indices]
    model_config = config.to_dict()["model"]
    weights = load_weights(run, model_config, names)
    out: dict[str, np.ndarray] = {"indices": indices, "images": images, "labels": labels}
    for v in names:
        out[f"{v}_failures"] = per_model[v]
    if len(indices):
        x = normalize(torch.as_tensor(images), input_stats(model_config))
        y = torch.as_tensor(labels)
        for v in names:
            model = load_model(weights[v], model_config, torch.device("cpu"))
            side = tuple(min(MAX_MAP_SIDE, d) for d in cam_resolution(model, x[:1], s.cam_layer))
            maps = gradcam_for_targets(model, x, {"predicted": torch.as_tensor(predicted[v][indices]), "true": y}, s.cam_layer)
            out[f"maps_{v}_predicted"] = pool_maps(maps["predicted"].numpy(), side)
            out[f"maps_{v}_true"] = pool_maps(maps["true"].numpy(), side)
    write_npz(run.path("eval", "browser.npz"), **out)
    seconds = time.perf_counter() - started
    counts = ", ".join(f"{v} {len(per_model[v])}" for v in names)
    log(f"browser: Grad-CAM of {len(indices)} images ({counts} confident failures, at most {s.browser_images} each) "
        f"under {len(names)} model(s) in {seconds:.0f} s")
    run.mark_done("browser", seconds, key, weights=weights_id, images=int(len(indices)))
    return StageOutcome("browser", ran=True, seconds=seconds)
