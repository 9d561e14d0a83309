"""Failure mining: where a model errs, how confidently, and what its failures look like.

Inputs are the model's softmax probabilities (N, C) and the true labels (N,)
as numpy arrays; every function returns plain Python ints, floats, lists and
dicts so the results go straight into JSON. `image_characteristics` measures
simple, interpretable image statistics in one batched pass, and
`compare_groups` asks which of them separate confident failures from
confident successes (with a bootstrap interval on the effect size, so a
difference on a handful of images is not over-read).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from stress.analyses.calibration import softmax
from stress.analyses.explanations import GALLERY_SIZE
from stress.analyses.stats import accuracy_with_interval, bootstrap_ci, cohens_d, holm_bonferroni, mcnemar_exact_p
from stress.constants import CLASSES, CONFIDENT, VARIANTS
from stress.errors import StressError

HOLM_ALPHA = 0.05  # family-wise error rate over the characteristics compared

__all__ = [
    "CLASSES",
    "LUMA_WEIGHTS",
    "EDGE_THRESHOLD",
    "mine_failures",
    "select_cases",
    "image_characteristics",
    "compare_groups",
    "cross_model",
]

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # Rec. 601 weights of R, G, B
# Sobel magnitude of luma (0..1 units) above which a pixel counts as an edge. A clean
# vertical step of height h gives magnitude 4h, so 0.25 means a step of about 1/16 of
# the full range (~16 grey levels): visible structure, but above JPEG-like noise.
EDGE_THRESHOLD = 0.25
CHARACTERISTICS = ("brightness", "contrast", "colourfulness", "edge_density", "centre_energy")
_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))  # responds to left->right increase
_CHUNK = 2048  # images per batched pass; bounds float64 memory (~50 MB at 32x32)


def _predictions(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check shapes; return predicted class, confidence (max probability) and the true labels."""
    probs = np.asarray(probs)
    labels = np.asarray(labels).reshape(-1)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0] or probs.shape[0] == 0:
        raise StressError(f"expected probs (N, C) and labels (N,) with N > 0, got {probs.shape} and {labels.shape}")
    return probs.argmax(axis=1), probs.max(axis=1).astype(np.float64), labels.astype(np.int64)


def _rank_by_confidence(indices: np.ndarray, confidences: np.ndarray) -> np.ndarray:
    """indices sorted by confidence descending, ties broken by index ascending."""
    return indices[np.lexsort((indices, -confidences[indices]))]


def mine_failures(
    probs: np.ndarray, labels: np.ndarray, thresholds: tuple[float, ...] = (0.9, 0.99), top_pairs: int = 10
) -> dict:
    """Error counts, confident errors per threshold, the most frequent confusions and errors ranked by confidence."""
    predictions, confidences, labels = _predictions(probs, labels)
    n_classes = int(np.asarray(probs).shape[1])
    errors = np.flatnonzero(predictions != labels)  # (E,) image indices
    n_images, n_errors = int(labels.size), int(errors.size)
    confident = {str(threshold): int(np.count_nonzero(confidences[errors] >= threshold)) for threshold in thresholds}
    # Encode each (true, predicted) pair as one integer so np.unique counts pairs in one pass.
    pair_codes = labels[errors] * n_classes + predictions[errors]  # (E,)
    codes, counts = np.unique(pair_codes, return_counts=True)
    order = np.lexsort((codes, -counts))[:top_pairs]  # most frequent first, ties by (true, predicted)
    confusions = [
        {
            "true": int(codes[i] // n_classes),
            "predicted": int(codes[i] % n_classes),
            "count": int(counts[i]),
            "share_of_errors": float(counts[i] / n_errors),
        }
        for i in order
    ]
    return {
        "n_images": n_images,
        "n_errors": n_errors,
        "error_rate": n_errors / n_images,
        "confident_errors": confident,
        "top_confusions": confusions,
        "ranked_error_indices": [int(i) for i in _rank_by_confidence(errors, confidences)],
    }


def select_cases(probs: np.ndarray, labels: np.ndarray, k: int = 8, min_cases: int = 3, exclude: np.ndarray | None = None) -> list[int]:
    """Indices of the most confident misclassifications, one per distinct (true, predicted) pair.

    Walks the errors from most to least confident and keeps the first error of each new
    pair, up to k. Distinct pairs give the case study variety instead of eight copies of
    the dominant confusion. If that yields fewer than min(min_cases, k) cases (few distinct
    pairs), the most confident remaining errors are added, repeating pairs, until that
    many exist or errors run out. Result ordered by confidence descending (ties by index).
    exclude: image indices never chosen (label suspects, when the studied failures must be the model's own).
    """
    predictions, confidences, labels = _predictions(probs, labels)
    n_classes = int(np.asarray(probs).shape[1])
    errors = np.flatnonzero(predictions != labels)
    if exclude is not None and len(exclude):
        errors = np.setdiff1d(errors, np.asarray(exclude, dtype=np.int64))
    ranked = _rank_by_confidence(errors, confidences)  # (E,)
    pair_codes = labels[ranked] * n_classes + predictions[ranked]
    # return_index gives each pair's first position in the ranking, i.e. its most confident error.
    _, first_positions = np.unique(pair_codes, return_index=True)
    chosen = np.sort(first_positions)[: max(k, 0)]
    target = min(min_cases, k, ranked.size)
    if chosen.size < target:
        remaining = np.setdiff1d(np.arange(ranked.size), chosen)  # ranking positions, ascending
        chosen = np.sort(np.concatenate([chosen, remaining[: target - chosen.size]]))
    return [int(i) for i in ranked[chosen]]


def _as_uint8_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    tensor = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    if tensor.dtype != torch.uint8 or tensor.dim() != 4 or tensor.shape[1] != 3:
        raise StressError(f"expected uint8 images (N, 3, H, W), got {tensor.dtype} {tuple(tensor.shape)}")
    return tensor


def _characteristics_chunk(images: torch.Tensor) -> torch.Tensor:
    """uint8 (n, 3, H, W) -> float64 (5, n), rows in CHARACTERISTICS order."""
    rgb = images.to(torch.float64)  # (n, 3, H, W), 0..255
    red, green, blue = rgb[:, 0], rgb[:, 1], rgb[:, 2]  # (n, H, W) each
    weights = torch.tensor(LUMA_WEIGHTS, dtype=torch.float64, device=images.device).view(1, 3, 1, 1)
    luma = (rgb * weights).sum(dim=1, keepdim=True) / 255.0  # (n, 1, H, W), 0..1
    brightness = luma.mean(dim=(1, 2, 3))
    contrast = luma.std(dim=(1, 2, 3), unbiased=False)  # RMS contrast: population std of luma

    # Hasler & Suesstrunk (2003): spread and mean of the opponent channels rg and yb, 0..255 scale.
    red_green = (red - green).flatten(1)  # (n, H*W)
    yellow_blue = (0.5 * (red + green) - blue).flatten(1)
    spread = torch.sqrt(red_green.var(dim=1, unbiased=False) + yellow_blue.var(dim=1, unbiased=False))
    offset = torch.sqrt(red_green.mean(dim=1) ** 2 + yellow_blue.mean(dim=1) ** 2)
    colourfulness = spread + 0.3 * offset

    # Sobel with replicate padding: a border pixel sees its own value outside the image,
    # so a flat image has no gradient at the edges (zero padding would invent a frame).
    sobel_x = torch.tensor(_SOBEL_X, dtype=torch.float64, device=images.device)
    kernels = torch.stack([sobel_x, sobel_x.T]).unsqueeze(1)  # (2, 1, 3, 3): d/dx, d/dy
    gradients = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), kernels)  # (n, 2, H, W)
    energy = (gradients**2).sum(dim=1)  # (n, H, W), squared gradient magnitude
    edge_density = (energy.sqrt() > EDGE_THRESHOLD).to(torch.float64).mean(dim=(1, 2))

    height, width = energy.shape[1:]
    top, left = height // 4, width // 4  # central half-size window: 16x16 of 32x32
    centre = energy[:, top : top + height // 2, left : left + width // 2].sum(dim=(1, 2))
    total = energy.sum(dim=(1, 2))
    # An image without any gradient has no preferred location; report the window's area share.
    area_share = (height // 2) * (width // 2) / (height * width)
    centre_energy = torch.where(total > 0, centre / total.clamp_min(1e-300), torch.full_like(total, area_share))
    return torch.stack([brightness, contrast, colourfulness, edge_density, centre_energy])


def image_characteristics(images: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image brightness, contrast, colourfulness, edge_density and centre_energy, each float64 (N,).

    images: uint8 (N, 3, H, W), numpy or torch on any device (computed there, returned on CPU).
    brightness: mean Rec.601 luma in [0, 1]; contrast: RMS contrast (population std of luma);
    colourfulness: Hasler & Suesstrunk (2003) on 0..255 RGB; edge_density: share of pixels whose
    Sobel gradient magnitude of luma exceeds EDGE_THRESHOLD; centre_energy: share of the squared
    Sobel gradient magnitude inside the central (H/2, W/2) window (0.25 for a flat image).
    """
    tensor = _as_uint8_tensor(images)
    if tensor.shape[0] == 0:
        return {name: np.zeros(0, dtype=np.float64) for name in CHARACTERISTICS}
    values = torch.cat([_characteristics_chunk(chunk) for chunk in tensor.split(_CHUNK)], dim=1)  # (5, N)
    values = values.cpu().numpy()
    return {name: values[row].copy() for row, name in enumerate(CHARACTERISTICS)}


def _finite_or_none(value: float) -> float | None:
    """JSON cannot hold inf/NaN; an infinite d (perfect separation, zero spread) becomes None."""
    return float(value) if math.isfinite(value) else None


def _effect_size(first: np.ndarray, second: np.ndarray, seed: int) -> dict:
    """Cohen's d of first vs second with its bootstrap interval and whether that excludes 0."""
    effect = cohens_d(first, second)
    if math.isinf(effect):
        # Both groups constant at different values: every resample is the same perfect split.
        return {"interval_excludes_zero": True, "p": 0.0}
    # Resamples that happen to be constant give infinite d; a quantile between two
    # infinities is NaN (reported as None), which must not count as separation.
    with np.errstate(invalid="ignore"):
        low, high = bootstrap_ci(cohens_d, first, second, seed=seed)
    from scipy import stats as scipy_stats

    with np.errstate(invalid="ignore", divide="ignore"):
        p = float(scipy_stats.ttest_ind(first, second, equal_var=False).pvalue)  # Welch's t-test
    return {
        "cohens_d": _finite_or_none(effect),
        "d_low": _finite_or_none(low),
        "d_high": _finite_or_none(high),
        "interval_excludes_zero": bool(low > 0 or high < 0),
        "p": p if math.isfinite(p) else None,
    }


def compare_groups(
    characteristics: dict[str, np.ndarray], group_a: np.ndarray, group_b: np.ndarray, seed: int = 0
) -> dict:
    """Per characteristic: group means and sizes, Cohen's d of a vs b with a bootstrap 95% CI, and whether it separates.

    group_a, group_b: boolean (N,) masks, e.g. confident failures vs confident successes.
    Several characteristics are compared at once, so "separates" is corrected for that
    multiplicity: Welch's t-test per characteristic ("p"), Holm's step-down over all the
    characteristics compared at family-wise alpha 0.05, and the bootstrap interval of d must
    exclude 0 as well ("interval_excludes_zero", uncorrected). With fewer than two images in a
    group, d, its interval and p are None and "separates" is False. Infinite values (zero spread,
    e.g. both groups constant) are reported as None because JSON cannot hold them; two constant
    groups at different values count as separated.
    """
    mask_a = np.asarray(group_a, dtype=bool).reshape(-1)
    mask_b = np.asarray(group_b, dtype=bool).reshape(-1)
    result = {}
    for name, values in characteristics.items():
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.shape != mask_a.shape or values.shape != mask_b.shape:
            raise StressError(f"characteristic {name!r} has {values.size} values but the masks have {mask_a.size}")
        first, second = values[mask_a], values[mask_b]
        entry = {
            "mean_a": float(first.mean()) if first.size else None,
            "mean_b": float(second.mean()) if second.size else None,
            "n_a": int(first.size),
            "n_b": int(second.size),
            "cohens_d": None,
            "d_low": None,
            "d_high": None,
            "interval_excludes_zero": False,
            "p": None,
            "separates": False,
        }
        if first.size >= 2 and second.size >= 2:
            entry.update(_effect_size(first, second, seed))
        result[name] = entry
    tested = [name for name, entry in result.items() if entry["p"] is not None]
    if tested:
        rejected = holm_bonferroni([result[name]["p"] for name in tested], HOLM_ALPHA)
        for name, reject in zip(tested, rejected):
            result[name]["separates"] = bool(reject and result[name]["interval_excludes_zero"])
            result[name]["holm_family"] = len(tested)
    return result


def cross_model(
    labels: np.ndarray,
    pred_a: np.ndarray,
    conf_a: np.ndarray,
    pred_b: np.ndarray,
    conf_b: np.ndarray,
    threshold: float = 0.9,
) -> dict:
    """Where two models disagree on correctness, where both fail, and McNemar's exact test.

    Returns {"n_images", "threshold", "counts": {category: n}, "indices": {category: [...]},
    "mcnemar_p"} for categories a_wrong_b_right, a_right_b_wrong, both_wrong and
    both_confidently_wrong (both wrong with confidence >= threshold). McNemar's exact test
    is a two-sided binomial test of the discordant pairs against p = 0.5 (p = 1 without any).
    """
    labels = np.asarray(labels).reshape(-1)
    arrays = [np.asarray(array).reshape(-1) for array in (pred_a, conf_a, pred_b, conf_b)]
    if any(array.shape != labels.shape for array in arrays):
        raise StressError("cross_model inputs must all have one entry per image")
    pred_a, conf_a, pred_b, conf_b = arrays
    wrong_a, wrong_b = pred_a != labels, pred_b != labels
    masks = {
        "a_wrong_b_right": wrong_a & ~wrong_b,
        "a_right_b_wrong": ~wrong_a & wrong_b,
        "both_wrong": wrong_a & wrong_b,
        "both_confidently_wrong": wrong_a & wrong_b & (conf_a >= threshold) & (conf_b >= threshold),
    }
    indices = {name: [int(i) for i in np.flatnonzero(mask)] for name, mask in masks.items()}
    counts = {name: len(found) for name, found in indices.items()}
    p_value = mcnemar_exact_p(counts["a_wrong_b_right"], counts["a_right_b_wrong"])
    return {
        "n_images": int(labels.size),
        "threshold": float(threshold),
        "counts": counts,
        "indices": indices,
        "mcnemar_p": p_value,
    }


def analyse_failures(labels: np.ndarray, merged: dict, characteristics: dict, num_cases: int,
                     class_names: tuple[str, ...] = CLASSES, names: tuple[str, ...] = VARIANTS,
                     suspects: dict[int, str] | None = None, exclude_suspects: bool = False) -> dict:
    """Per model: counts, top confusions, selected cases with every model's view, characteristics.

    names: the models under test, the reference first. A case's `other_*` fields are the view of
    the reference (or, for the reference's own cases, of the second model); `others` lists every
    other model's. `cross_model` compares the reference with the second model, `cross_models`
    the reference with each other model. suspects: {image index: label-audit text} of the images
    whose label is suspect (stress.analyses.labels); their cases say so, and with exclude_suspects
    they are never selected.
    """
    suspects = suspects or {}
    excluded = np.array(sorted(suspects), dtype=np.int64) if exclude_suspects else None
    probs = {v: softmax(merged[v]["logits"]) for v in names}
    result: dict = {}
    for v in names:
        other = (names[1] if v == names[0] else names[0]) if len(names) > 1 else None
        mined = mine_failures(probs[v], labels)
        mined["ranked_error_indices"] = mined["ranked_error_indices"][:100]  # the full list is in predictions.npz
        for pair in mined["top_confusions"]:
            pair["true_name"], pair["predicted_name"] = class_names[pair["true"]], class_names[pair["predicted"]]
        cases = []
        for rank, index in enumerate(select_cases(probs[v], labels, k=num_cases, exclude=excluded)):
            cases.append({
                "rank": rank,
                "index": int(index),
                "true": int(labels[index]),
                "true_name": class_names[int(labels[index])],
                "predicted": int(merged[v]["predicted"][index]),
                "predicted_name": class_names[int(merged[v]["predicted"][index])],
                "confidence": float(merged[v]["confidence"][index]),
                **({"other_variant": other,
                    "other_predicted": int(merged[other]["predicted"][index]),
                    "other_predicted_name": class_names[int(merged[other]["predicted"][index])],
                    "other_confidence": float(merged[other]["confidence"][index])} if other else {}),
                "others": [{"model": o, "predicted": int(merged[o]["predicted"][index]),
                            "predicted_name": class_names[int(merged[o]["predicted"][index])],
                            "confidence": float(merged[o]["confidence"][index])} for o in names if o != v],
                "characteristics": {k: float(characteristics[k][index]) for k in CHARACTERISTICS},
                "label_suspect": suspects.get(int(index)),
            })
        correct, confidence = merged[v]["correct"].astype(bool), merged[v]["confidence"]
        confident_failures = ~correct & (confidence >= CONFIDENT)
        confident_successes = correct & (confidence >= CONFIDENT)
        result[v] = {
            **mined,
            "accuracy": accuracy_with_interval(correct),
            "cases": cases,
            "label_suspects_excluded": bool(exclude_suspects),
            "characteristics": {
                "groups": {"a": f"confident failures (confidence >= {CONFIDENT})", "b": f"confident successes (confidence >= {CONFIDENT})"},
                "comparison": compare_groups(characteristics, confident_failures, confident_successes),
            },
        }
    views = {}
    for b in names[1:]:
        a = names[0]
        view = cross_model(labels, merged[a]["predicted"], merged[a]["confidence"], merged[b]["predicted"], merged[b]["confidence"],
                           threshold=CONFIDENT)
        view["indices"] = {k: list(map(int, idx[:50])) for k, idx in view["indices"].items()}  # examples; full table in predictions.csv
        view["names"] = {"a": a, "b": b}
        views[b] = view
    if views:
        result["cross_model"] = views[names[1]]
        result["cross_models"] = views
    return result


def failure_gallery(images: np.ndarray, labels: np.ndarray, merged: dict, exclude: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The GALLERY_SIZE most confident failures per model (every key of `merged`), with their images, for the gallery figure.

    exclude: image indices left out (label suspects, with --exclude-label-suspects).
    """
    out = {}
    for v in merged:
        wrong = np.flatnonzero(~merged[v]["correct"].astype(bool))
        if exclude is not None and len(exclude):
            wrong = np.setdiff1d(wrong, np.asarray(exclude, dtype=np.int64))
        order = wrong[np.lexsort((wrong, -merged[v]["confidence"][wrong]))][:GALLERY_SIZE]
        out[f"{v}_indices"] = order
        out[f"{v}_images"] = images[order]
        out[f"{v}_labels"] = labels[order]
        out[f"{v}_predicted"] = merged[v]["predicted"][order]
        out[f"{v}_confidence"] = merged[v]["confidence"][order]
    return out


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts; rows are true classes, columns predicted classes."""
    return np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )
