"""Label-error audit: which test labels are probably wrong, and how many confident failures they explain.

Each model's softmax over the test set is out-of-sample (the models never trained on test
images), which is what confident learning needs. `flag_label_issues` hands it to cleanlab's
`find_label_issues` (Northcutt et al. 2021, prune by noise rate, ranked by self-confidence);
this module only counts and compares what cleanlab flags:

- per model: how many test images are flagged, and what share of its confident failures
  (confidence >= 0.9 and >= 0.99), of its errors and of its correct predictions are flagged,
  with Wilson intervals over those images;
- between the reference and every other model: how far their flags agree (Cohen's kappa over
  the test images, Jaccard index of the flagged sets);
- the label suspects: images that every model under test flags. A wrong label is wrong for any
  model, while a model's confident error is often its own, so the flags that models share are the
  candidates worth a look. Confident learning trusts a model where it is confident: when the
  flags cover most of a model's errors (`share of errors flagged` >= MIRRORS_ERRORS), they mostly
  restate that model's confident errors, and the report says so instead of calling them label errors.

Inputs are numpy arrays; results are plain Python values for JSON.
"""

from __future__ import annotations

import warnings

import numpy as np

from stress.analyses.calibration import softmax
from stress.analyses.stats import wilson_interval
from stress.errors import StressError

THRESHOLDS = (0.9, 0.99)  # confidence of the confident failures whose flags are counted
MAX_SUSPECTS = 200  # suspects listed in labels.json (every flag is in labels.npz)
MIRRORS_ERRORS = 0.5  # a model's flags covering at least this share of its errors mostly restate them
CLEANLAB_MIN_EXAMPLES = 1  # find_label_issues' min_examples_per_class, left at its default
METHOD = ("confident learning: cleanlab.filter.find_label_issues (filter_by='prune_by_noise_rate', "
          "ranked by self-confidence) on each model's test-set softmax")


def flag_label_issues(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Indices of the images whose given label cleanlab finds probably wrong, most suspect first.

    labels (N,) int, probs (N, C) rows summing to 1, out-of-sample for the model that gave them.
    """
    from cleanlab.filter import find_label_issues

    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != labels.size or labels.size == 0:
        raise StressError(f"expected probs (N, C) and labels (N,) with N > 0, got {probs.shape} and {labels.shape}")
    probs = probs / probs.sum(axis=1, keepdims=True)  # float32 softmax sums drift from 1 by ~1e-7
    with warnings.catch_warnings():
        # One UserWarning per class with too few given labels; the audits record those classes instead (unaudited_classes).
        warnings.filterwarnings("ignore", message="May not flag all label issues in class", category=UserWarning)
        ranked = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    return np.asarray(ranked, dtype=np.int64)


def unaudited_classes(labels: np.ndarray, class_names: tuple[str, ...]) -> list[str]:
    """The classes with a single given label: cleanlab's prune-by-noise-rate flags none of their images.

    It skips every class with at most `min_examples_per_class` (default 1) given labels; a class
    without any has no image to flag, so only the classes with exactly one are named.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64).reshape(-1), minlength=len(class_names))
    return [class_names[c] for c in range(len(class_names)) if counts[c] == CLEANLAB_MIN_EXAMPLES]


def unaudited_text(classes: list[str], images: str) -> str:
    """One sentence naming the classes cleanlab could not audit ('' without any)."""
    if not classes:
        return ""
    return (f"cleanlab flags nothing in {', '.join(classes)}: {'it has' if len(classes) == 1 else 'each has'} a single {images} "
            "(it needs at least two given labels of a class)")


def audit_text(model: dict) -> str:
    """One model's audit in one line (its labels.json entry): flags, the flags among its errors, the suspects among its
    confident failures, and, where the flags cover most of its errors, that they restate them."""
    c90, c99 = model["suspects_among_confident_failures"]["0.9"], model["suspects_among_confident_failures"]["0.99"]
    errors = model["errors"]
    text = (f"{model['flagged']} test labels flagged ({errors['flagged']} of its {errors['n']} errors); label suspects (flagged by "
            f"every model) among its confident failures: {c90['flagged']}/{c90['n']} (>=0.9), {c99['flagged']}/{c99['n']} (>=0.99)")
    if model.get("flags_mirror_errors"):
        text += (f"; the flags cover {100 * errors['share']:.0f}% of its errors, and one model cannot tell its confident errors "
                 "from wrong labels: only labels every model flags are suspects")
    return text


def flags_mirror_errors(errors: dict) -> bool:
    """Whether a model's flags cover at least MIRRORS_ERRORS of its errors (a `_share` record; False without errors)."""
    return errors["share"] is not None and errors["share"] >= MIRRORS_ERRORS


def _share(flagged: np.ndarray, group: np.ndarray) -> dict:
    """How many of `group` (bool mask) are flagged, as a share with its Wilson 95% interval (None without a group)."""
    n, k = int(group.sum()), int((flagged & group).sum())
    low, high = wilson_interval(k, n) if n else (None, None)
    return {"n": n, "flagged": k, "share": k / n if n else None, "low": low, "high": high}


def cohens_kappa(a: np.ndarray, b: np.ndarray) -> float | None:
    """Cohen's kappa of two boolean ratings of the same items; None when chance agreement is 1 (both constant and equal)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    observed = float(np.mean(a == b))
    pa, pb = float(a.mean()), float(b.mean())
    chance = pa * pb + (1 - pa) * (1 - pb)
    return None if chance >= 1.0 else (observed - chance) / (1.0 - chance)


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Counts of images flagged by both, only one or either of two models, their Jaccard index and Cohen's kappa."""
    both, either = int((a & b).sum()), int((a | b).sum())
    return {"both": both, "only_reference": int((a & ~b).sum()), "only_other": int((~a & b).sum()), "either": either,
            "jaccard": both / either if either else None, "kappa": cohens_kappa(a, b)}


def audit_labels(labels: np.ndarray, logits: dict[str, np.ndarray], class_names: tuple[str, ...],
                 names: tuple[str, ...]) -> tuple[dict, dict[str, np.ndarray], dict[int, str]]:
    """The audit's record (labels.json), its per-image arrays (labels.npz) and every suspect's text by image index.

    logits: {model: (N, C)} over the test images, the reference model first in `names`. The
    arrays are `<model>_flagged` (N,) bool and `<model>_rank` (N,) int (position in cleanlab's
    ranking, -1 where not flagged), `suspicion` (N,): the share of models that flag the image, and
    `suspect` (N,) bool: flagged by every model (the label suspects).
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    n = labels.size
    probs = {v: softmax(logits[v]) for v in names}
    arrays: dict[str, np.ndarray] = {}
    models = {}
    confident_failures: dict[str, dict[float, np.ndarray]] = {}  # per model and threshold: wrong with confidence >= t
    broken = [v for v in names if not np.isfinite(probs[v]).all()]
    if broken:
        return skipped(n, f"the outputs of {', '.join(broken)} are not finite (a diverged training?)")
    for v in names:
        try:
            ranked = flag_label_issues(labels, probs[v])
        except (ValueError, IndexError, ZeroDivisionError) as exc:  # cleanlab on degenerate inputs (e.g. a class without images)
            return skipped(n, f"cleanlab could not audit {v}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
        flagged = np.zeros(n, dtype=bool)
        flagged[ranked] = True
        rank = np.full(n, -1, dtype=np.int64)
        rank[ranked] = np.arange(ranked.size)
        arrays[f"{v}_flagged"], arrays[f"{v}_rank"] = flagged, rank
        predicted, confidence = probs[v].argmax(1), probs[v].max(1)
        wrong = predicted != labels
        confident_failures[v] = {t: wrong & (confidence >= t) for t in THRESHOLDS}
        low, high = wilson_interval(int(flagged.sum()), n)
        models[v] = {
            "flagged": int(flagged.sum()),
            "share": float(flagged.mean()),
            "share_interval": [low, high],
            "errors": _share(flagged, wrong),
            "correct": _share(flagged, ~wrong),
            "confident_failures": {str(t): _share(flagged, mask) for t, mask in confident_failures[v].items()},
            "ranked": [int(i) for i in ranked[:MAX_SUSPECTS]],
        }
    votes = np.mean([arrays[f"{v}_flagged"] for v in names], axis=0)
    arrays["suspicion"], arrays["suspect"] = votes, votes == 1
    for v in names:
        models[v]["suspects_among_confident_failures"] = {str(t): _share(arrays["suspect"], mask) for t, mask in confident_failures[v].items()}
        models[v]["flags_mirror_errors"] = flags_mirror_errors(models[v]["errors"])
    listed = suspects(labels, probs, arrays, class_names, names, limit=n)
    record = {
        "method": METHOD,
        "n_images": int(n),
        "models": models,
        "agreement": {o: {"models": [names[0], o], **agreement(arrays[f"{names[0]}_flagged"], arrays[f"{o}_flagged"])} for o in names[1:]},
        "flagged_by_every_model": int((votes == 1).sum()),
        "flagged_by_any_model": int((votes > 0).sum()),
        "suspect_definition": "flagged by every model under test",
        "unaudited_classes": unaudited_classes(labels, class_names),
        "mirrors_errors_at": MIRRORS_ERRORS,
        "suspects": listed[:MAX_SUSPECTS],
    }
    return record, arrays, {s["index"]: s["text"] for s in listed if len(s["flagged_by"]) == len(names)}


def skipped(n: int, why: str) -> tuple[dict, dict[str, np.ndarray], dict[int, str]]:
    """An audit that could not run: its record says why; no image is a suspect."""
    return ({"method": METHOD, "n_images": int(n), "skipped": why},
            {"suspicion": np.zeros(n), "suspect": np.zeros(n, dtype=bool)}, {})


def suspects(labels: np.ndarray, probs: dict[str, np.ndarray], arrays: dict[str, np.ndarray], class_names: tuple[str, ...],
             names: tuple[str, ...], limit: int = MAX_SUSPECTS) -> list[dict]:
    """Images flagged by any model: flagged by more models first, then by the lowest mean probability of the given label.

    Each says which models flag it; the label suspects proper are those flagged by every model."""
    votes = arrays["suspicion"]
    flagged = np.flatnonzero(votes > 0)
    given_probability = np.mean([probs[v][np.arange(labels.size), labels] for v in names], axis=0)
    order = flagged[np.lexsort((flagged, given_probability[flagged], -votes[flagged]))][:limit]
    out = []
    for rank, i in enumerate(order):
        views = {v: {"predicted": int(probs[v][i].argmax()), "predicted_name": class_names[int(probs[v][i].argmax())],
                     "confidence": float(probs[v][i].max()), "given_probability": float(probs[v][i, labels[i]]),
                     "flagged": bool(arrays[f"{v}_flagged"][i])} for v in names}
        out.append({"rank": rank, "index": int(i), "given": int(labels[i]), "given_name": class_names[int(labels[i])],
                    "flagged_by": [v for v in names if views[v]["flagged"]], "models": views, "text": suspect_text(class_names[int(labels[i])], views)})
    return out


def suspect_text(given_name: str, views: dict[str, dict]) -> str:
    """'label suspect: given cat, both models say dog (baseline 0.99, augmented 0.97)' and its variants."""
    predicted = {view["predicted_name"] for view in views.values()}
    confidences = ", ".join(f"{v} {view['confidence']:.2f}" for v, view in views.items())
    if len(predicted) == 1:
        who = "the model says" if len(views) == 1 else ("both models say" if len(views) == 2 else "every model says")
        return f"label suspect: given {given_name}, {who} {predicted.pop()} ({confidences})"
    says = "; ".join(f"{v} says {view['predicted_name']} ({view['confidence']:.2f})" for v, view in views.items())
    return f"label suspect: given {given_name}; {says}"


def suspect_set(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The label suspects' indices (flagged by every model: labels.npz's `suspect`), ascending."""
    return np.flatnonzero(np.asarray(arrays["suspect"]))
