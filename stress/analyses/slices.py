"""Failure slices: named groups of test images where a model fails more often than overall.

Candidate slices are built from what a run already measures:

- the true class;
- each image characteristic (stress.analyses.failures.CHARACTERISTICS) in quarters of the
  test set, and the hue of the image's mean colour (six hue sectors, or "grey");
- a true class together with one of those bins (e.g. "cat, brightness in the lowest quarter");
- k-means clusters (scikit-learn) of the model's penultimate-layer embeddings.

Every candidate with at least `min_size` images is tested against the model's overall error
rate p0 with the two-sided score test, z = (e/n - p0) / sqrt(p0 (1 - p0) / n). Holm's
step-down procedure over all candidates tried keeps the family-wise error rate at alpha. A
kept slice is worse than overall (lift = error rate / p0 > 1) and its Wilson interval, taken at
the confidence level of its Holm threshold (1 - alpha / (m - k)), excludes p0: the Wilson
interval is the inversion of the same score test, so "rejected" and "interval excludes p0"
coincide. A conjunction (a class with a bin) is kept only if that interval also lies above the
error rates of both its parents: otherwise it only inherits the class's (or the bin's) weakness,
and "cat, bright images" would repeat "cat" once per bin. Kept slices are ranked by the lower end of that interval over p0 (`lift_low`, the lift
the data guarantee), not by the point lift: a small subset of a weak slice often has a higher
point lift by chance, and ranking by it would put such fragments above the slice itself. Each
slice is described by its most frequent (true, predicted) pair among its errors.

Intervals are over the test images of one trained model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from stress.analyses.failures import CHARACTERISTICS
from stress.analyses.stats import holm_bonferroni, holm_levels, wilson_interval
from stress.errors import StressError

ALPHA = 0.05  # family-wise error rate over the candidate slices of one model
MIN_SIZE = 30  # images a candidate needs to be tried
TOP = 10  # slices listed per model (all kept ones are counted)
CLUSTERS = 16  # k-means clusters of the embeddings (fewer when the test set is small)
QUARTER_NAMES = ("lowest quarter", "second quarter", "third quarter", "highest quarter")
HUES = ("red", "yellow", "green", "cyan", "blue", "magenta")  # 60° sectors centred on these hues
GREY_SATURATION = 0.15  # HSV saturation of the mean colour below which an image counts as grey
INTERVAL_UNIT = "test images of one trained model; Wilson interval at the Holm-adjusted level of each slice"


@dataclass(frozen=True)
class Candidate:
    kind: str  # class | characteristic | hue | class+characteristic | class+hue | cluster
    name: str
    mask: np.ndarray  # (N,) bool
    parents: tuple[str, ...] = ()  # a conjunction's two slices (its class, its bin), by name


def mean_hue(images: np.ndarray) -> np.ndarray:
    """Per image, the hue sector (HUES) of its mean colour, or "grey" when that colour is unsaturated. images uint8 (N, 3, H, W)."""
    rgb = np.asarray(images, dtype=np.float64).mean(axis=(2, 3)) / 255.0  # (N, 3)
    high, low = rgb.max(axis=1), rgb.min(axis=1)
    spread = high - low
    saturation = np.where(high > 0, spread / np.where(high > 0, high, 1.0), 0.0)
    r, g, b = rgb.T
    safe = np.where(spread > 0, spread, 1.0)
    hue = np.where(high == r, ((g - b) / safe) % 6, np.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60.0  # degrees
    sector = np.floor(((hue + 30.0) % 360.0) / 60.0).astype(int)
    names = np.array(HUES, dtype=object)[sector]
    names[saturation < GREY_SATURATION] = "grey"
    return names.astype(str)


def quarter_bins(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Bin index 0..3 per value by the quartiles of `values`, and each bin's range as text."""
    values = np.asarray(values, dtype=np.float64)
    edges = np.quantile(values, (0.25, 0.5, 0.75))
    bins = np.searchsorted(edges, values, side="right")  # (N,) 0..3; a value equal to an edge goes up
    bounds = [values.min(), *edges, values.max()]
    ranges = [f"{bounds[i]:.3g}–{bounds[i + 1]:.3g}" for i in range(4)]
    return bins, ranges


def candidate_slices(labels: np.ndarray, class_names: tuple[str, ...], characteristics: dict[str, np.ndarray],
                     hues: np.ndarray | None = None, clusters: np.ndarray | None = None) -> list[Candidate]:
    """Every candidate slice (before the size filter), in a fixed order."""
    labels = np.asarray(labels).reshape(-1)
    classes = [(int(c), class_names[int(c)], labels == c) for c in np.unique(labels)]
    bins: list[tuple[str, str, np.ndarray]] = []
    for name in CHARACTERISTICS:
        if name in characteristics:
            index, ranges = quarter_bins(characteristics[name])
            label = name.replace("_", " ")
            bins += [("characteristic", f"{label} in the {QUARTER_NAMES[q]} ({ranges[q]})", index == q) for q in range(4)]
    if hues is not None:
        bins += [("hue", f"mean colour {h}", hues == h) for h in (*HUES, "grey")]
    out = [Candidate("class", f"true class {name}", mask) for _, name, mask in classes]
    out += [Candidate(kind, name, mask) for kind, name, mask in bins]
    for _, class_name, class_mask in classes:
        out += [Candidate(f"class+{kind}", f"{class_name}, {name}", class_mask & mask, (f"true class {class_name}", name))
                for kind, name, mask in bins]
    if clusters is not None:
        for c in np.unique(clusters):
            mask = clusters == c
            values, counts = np.unique(labels[mask], return_counts=True)
            top = np.argsort(-counts, kind="stable")[:2]
            make_up = ", ".join(f"{100 * counts[i] / mask.sum():.0f}% {class_names[int(values[i])]}" for i in top)
            out.append(Candidate("cluster", f"embedding cluster {int(c)} ({make_up})", mask))
    return out


def score_test_p(errors: int, n: int, p0: float) -> float:
    """Two-sided p-value of the score test of errors/n against p0 (the test the Wilson interval inverts)."""
    z = (errors / n - p0) / math.sqrt(p0 * (1.0 - p0) / n)
    return float(2.0 * scipy_stats.norm.sf(abs(z)))


def _describe(mask: np.ndarray, labels: np.ndarray, predicted: np.ndarray, class_names: tuple[str, ...]) -> dict:
    """The slice's most common true class and its most frequent (true, predicted) pair among its errors."""
    true = labels[mask]
    values, counts = np.unique(true, return_counts=True)
    top = int(values[np.argmax(counts)])
    wrong = mask & (predicted != labels)
    out = {"top_class": class_names[top], "top_class_share": float(counts.max() / mask.sum())}
    if wrong.any():
        codes = labels[wrong] * len(class_names) + predicted[wrong]
        codes, counts = np.unique(codes, return_counts=True)
        best = int(np.argmax(counts))
        out["top_confusion"] = {"true_name": class_names[int(codes[best] // len(class_names))],
                                "predicted_name": class_names[int(codes[best] % len(class_names))],
                                "count": int(counts[best]), "share_of_slice_errors": float(counts[best] / wrong.sum())}
    return out


def find_slices(correct: np.ndarray, candidates: list[Candidate], labels: np.ndarray, predicted: np.ndarray,
                class_names: tuple[str, ...], alpha: float = ALPHA, min_size: int = MIN_SIZE, top: int = TOP) -> dict:
    """The slices where the error rate is significantly above overall (see the module docstring), ranked by lift_low.

    Returns {"overall_error", "n_images", "tried", "kept", "inherited" (conjunctions left out as no worse than a
    parent), "slices": [top kept], "tested": [every
    tried slice's kind, name, size, errors]} ("tested" lets a sweep follow each named slice over seeds).
    """
    correct = np.asarray(correct, dtype=bool).reshape(-1)
    labels, predicted = np.asarray(labels).reshape(-1), np.asarray(predicted).reshape(-1)
    if not correct.size or labels.shape != correct.shape or predicted.shape != correct.shape:
        raise StressError(f"find_slices needs one correct/label/prediction per image, got {correct.shape}, {labels.shape}, {predicted.shape}")
    n, wrong = correct.size, ~correct
    p0 = float(wrong.mean())
    tried = [c for c in candidates if c.mask.sum() >= min_size and c.mask.sum() < n]
    tested = [{"kind": c.kind, "name": c.name, "size": int(c.mask.sum()), "errors": int(wrong[c.mask].sum()),
               **({"parents": list(c.parents)} if c.parents else {})} for c in tried]
    result = {"overall_error": p0, "n_images": int(n), "alpha": alpha, "min_size": min_size, "tried": len(tried),
              "kept": 0, "inherited": 0, "slices": [], "tested": tested, "interval_unit": INTERVAL_UNIT}
    if not tried or p0 in (0.0, 1.0):  # no errors (or no successes): nothing can be worse than overall
        return result
    pvalues = [score_test_p(t["errors"], t["size"], p0) for t in tested]
    rejected, levels = holm_bonferroni(pvalues, alpha), holm_levels(pvalues, alpha)
    rates = {c.name: float(wrong[c.mask].mean()) for c in candidates if c.mask.any()}
    kept, inherited = [], 0
    for c, t, p, reject, level in zip(tried, tested, pvalues, rejected, levels):
        rate = t["errors"] / t["size"]
        if not reject or rate <= p0:
            continue
        low, high = wilson_interval(t["errors"], t["size"], confidence=1.0 - level)
        if c.parents and low <= max(rates.get(name, p0) for name in c.parents):
            inherited += 1
            continue
        kept.append({**{k: t[k] for k in ("kind", "name", "size", "errors")}, "error_rate": rate, "lift": rate / p0, "lift_low": low / p0,
                     "low": low, "high": high, "confidence": 1.0 - level, "p": p, "mask": c.mask,
                     **_describe(c.mask, labels, predicted, class_names)})
    kept.sort(key=lambda s: (-s["lift_low"], s["name"]))
    result["kept"], result["inherited"] = len(kept), inherited
    result["slices"] = [{"rank": i, **s} for i, s in enumerate(kept[:top])]
    return result


def cluster_embeddings(embedding: np.ndarray, seed: int, clusters: int = CLUSTERS, min_size: int = MIN_SIZE) -> np.ndarray:
    """k-means (scikit-learn, k-means++ with 3 restarts) of the standardised embeddings; cluster index per image."""
    from sklearn.cluster import KMeans

    x = _standardise(embedding)
    k = max(2, min(clusters, len(x) // max(min_size, 1)))
    if len(x) < k:
        return np.zeros(len(x), dtype=np.int64)
    return KMeans(n_clusters=k, n_init=3, random_state=seed % 2**32).fit_predict(x).astype(np.int64)


def project(embedding: np.ndarray, seed: int) -> tuple[np.ndarray, list[float]]:
    """2-D PCA (scikit-learn) of the standardised embeddings, and the share of variance each axis explains."""
    from sklearn.decomposition import PCA

    x = _standardise(embedding)
    if x.shape[1] < 2 or len(x) < 2:
        return np.zeros((len(x), 2), dtype=np.float32), [0.0, 0.0]
    pca = PCA(n_components=2, random_state=seed % 2**32)
    return pca.fit_transform(x).astype(np.float32), [float(v) for v in pca.explained_variance_ratio_]


def _standardise(embedding: np.ndarray) -> np.ndarray:
    x = np.asarray(embedding, dtype=np.float64)
    if x.ndim != 2:
        raise StressError(f"embeddings must be (N, D), got {x.shape}")
    spread = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
