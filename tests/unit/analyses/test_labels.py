"""The label audit: planted label flips on synthetic data are found, its counts match slow loops and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stress.analyses.calibration import softmax
from stress.analyses.labels import THRESHOLDS, agreement, audit_labels, audit_text, cohens_kappa, flag_label_issues, suspect_text
from stress.augment import normalize
from stress.config import ModelConfig
from stress.data.synthetic import make_synthetic
from stress.models import create_model

NAMES = tuple(f"class{i}" for i in range(10))


@pytest.fixture(scope="module")
def synthetic_logits():
    """A small SimpleCNN trained on synthetic shapes (train split), and its logits on 2,000 synthetic test images."""
    torch.manual_seed(0)
    data = make_synthetic(2000, 2000, seed=3)
    to_tensor = lambda key: torch.tensor(data[key]).permute(0, 3, 1, 2).contiguous()  # noqa: E731 - (N, H, W, 3) -> (N, 3, H, W)
    x, y = to_tensor("x_train"), torch.tensor(data["y_train"]).long()
    stats = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    model = create_model(ModelConfig(widths=(8, 16, 32), hidden=32))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(8):
        for batch in torch.randperm(len(y)).split(64):
            optimiser.zero_grad()
            F.cross_entropy(model(normalize(x[batch], stats)), y[batch]).backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        logits = model(normalize(to_tensor("x_test"), stats)).numpy()
    return logits, np.asarray(data["y_test"], dtype=np.int64)


def flip(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels with `share` of them changed to another class, and the changed indices."""
    rng = np.random.default_rng(seed)
    changed = rng.choice(labels.size, int(round(share * labels.size)), replace=False)
    noisy = labels.copy()
    noisy[changed] = (labels[changed] + rng.integers(1, 10, changed.size)) % 10
    return noisy, np.sort(changed)


def precision_recall(found: np.ndarray, planted: np.ndarray) -> tuple[float, float]:
    hits = np.intersect1d(found, planted).size
    return hits / max(found.size, 1), hits / planted.size


def test_the_audit_recovers_planted_label_flips_on_synthetic_data(synthetic_logits):
    logits, labels = synthetic_logits
    assert (logits.argmax(1) == labels).mean() > 0.95  # the model learnt the shapes: its view of a label is informative
    noisy, planted = flip(labels, 0.02, seed=1)
    record, arrays, _ = audit_labels(noisy, {"m": logits}, NAMES, ("m",))
    found = np.flatnonzero(arrays["m_flagged"])
    precision, recall = precision_recall(found, planted)
    assert precision > 0.8 and recall > 0.8, (precision, recall)
    assert record["models"]["m"]["flagged"] == found.size


def test_the_check_fails_for_a_model_that_knows_nothing(synthetic_logits):
    """Planted: logits unrelated to the images cannot tell a flipped label from a true one."""
    logits, labels = synthetic_logits
    noisy, planted = flip(labels, 0.02, seed=1)
    uninformed = np.random.default_rng(0).normal(size=logits.shape)
    found = flag_label_issues(noisy, np.exp(uninformed) / np.exp(uninformed).sum(1, keepdims=True))
    precision, recall = precision_recall(found, planted)
    assert precision < 0.8


def test_counts_and_shares_match_a_slow_loop(synthetic_logits):
    logits, labels = synthetic_logits
    noisy, _ = flip(labels, 0.05, seed=2)
    other = logits + np.random.default_rng(1).normal(scale=2.0, size=logits.shape)  # a second, noisier model
    record, arrays, texts = audit_labels(noisy, {"a": logits, "b": other}, NAMES, ("a", "b"))
    for name, lg in (("a", logits), ("b", other)):
        probs = np.exp(lg - lg.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        flagged = arrays[f"{name}_flagged"]
        for t in THRESHOLDS:
            confident = [i for i in range(noisy.size) if probs[i].argmax() != noisy[i] and probs[i].max() >= t]
            entry = record["models"][name]["confident_failures"][str(t)]
            assert entry["n"] == len(confident) and entry["flagged"] == sum(bool(flagged[i]) for i in confident)
        ranked = record["models"][name]["ranked"]
        assert [arrays[f"{name}_rank"][i] for i in ranked] == list(range(len(ranked)))
    a, b = arrays["a_flagged"], arrays["b_flagged"]
    together = record["agreement"]["b"]
    assert together["both"] == sum(1 for i in range(noisy.size) if a[i] and b[i])
    assert record["flagged_by_any_model"] == sum(1 for i in range(noisy.size) if a[i] or b[i])
    assert sorted(texts) == [i for i in range(noisy.size) if a[i] and b[i]] == np.flatnonzero(arrays["suspect"]).tolist()
    for name in ("a", "b"):  # label suspects (flagged by both) among each model's confident failures, by a slow loop
        lg = logits if name == "a" else other
        probs = np.exp(lg - lg.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        confident = [i for i in range(noisy.size) if probs[i].argmax() != noisy[i] and probs[i].max() >= 0.9]
        entry = record["models"][name]["suspects_among_confident_failures"]["0.9"]
        assert entry["n"] == len(confident) and entry["flagged"] == sum(1 for i in confident if a[i] and b[i])
    suspects = record["suspects"]
    assert [s["index"] for s in suspects if len(s["flagged_by"]) == 2] == [s["index"] for s in suspects[: record["flagged_by_every_model"]]]


def test_kappa_agrees_with_scikit_learn_and_is_undefined_for_constant_equal_ratings():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    a = rng.random(500) < 0.1
    b = np.where(rng.random(500) < 0.8, a, rng.random(500) < 0.1)
    assert cohens_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    assert cohens_kappa(np.zeros(5, bool), np.zeros(5, bool)) is None
    assert agreement(a, a)["kappa"] == pytest.approx(1.0) and agreement(a, a)["only_other"] == 0


def test_the_suspect_text_names_the_given_label_and_what_the_models_say():
    views = {"baseline": {"predicted_name": "dog", "confidence": 0.991}, "augmented": {"predicted_name": "dog", "confidence": 0.97}}
    assert suspect_text("cat", views) == "label suspect: given cat, both models say dog (baseline 0.99, augmented 0.97)"
    views["augmented"]["predicted_name"] = "deer"
    assert suspect_text("cat", views) == "label suspect: given cat; baseline says dog (0.99); augmented says deer (0.97)"


def one_given_label(logits: np.ndarray, labels: np.ndarray, of_class: int, wrong: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels where `of_class` has `wrong` given labels only, each on an image the model puts confidently elsewhere.

    The images truly of `of_class` get the next class's label; the planted ones are confident, correctly
    predicted images of another class, so cleanlab would flag them if it audited the class."""
    probs = softmax(logits)
    labels = labels.copy()
    labels[labels == of_class] = (of_class + 1) % 10
    candidates = np.flatnonzero((probs.argmax(1) == labels) & (probs.max(1) > 0.95) & (labels != (of_class + 1) % 10))
    planted = candidates[:wrong]
    labels[planted] = of_class
    return labels, planted


def test_a_class_with_a_single_given_label_is_named_where_cleanlab_skips_it_and_its_warning_is_silenced(synthetic_logits):
    import warnings

    from cleanlab.filter import find_label_issues

    from stress.analyses.labels import unaudited_classes

    logits, clean = synthetic_logits
    labels, planted = one_given_label(logits, clean, of_class=3, wrong=1)
    probs = softmax(logits)
    with warnings.catch_warnings(record=True) as caught:  # the reference: cleanlab itself, called directly
        warnings.simplefilter("always")
        direct = find_label_issues(labels, probs / probs.sum(1, keepdims=True), return_indices_ranked_by="self_confidence", n_jobs=1)
    skipped_by_cleanlab = sorted({int(str(w.message).split("class: ")[1].split(",")[0]) for w in caught if "too few examples" in str(w.message)})
    assert skipped_by_cleanlab == [3]
    assert unaudited_classes(labels, NAMES) == ["class3"]
    assert planted[0] not in direct  # a confident label error that cleanlab does not flag: its class is not audited
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        ranked = flag_label_issues(labels, probs)
    assert [str(w.message) for w in ours] == [] and np.array_equal(ranked, direct)
    record, _, _ = audit_labels(labels, {"m": logits}, NAMES, ("m",))
    assert record["unaudited_classes"] == ["class3"]


def test_planted_two_given_labels_are_audited_and_a_class_without_labels_is_not_named(synthetic_logits):
    from stress.analyses.labels import unaudited_classes

    logits, clean = synthetic_logits
    labels, planted = one_given_label(logits, clean, of_class=3, wrong=2)
    assert unaudited_classes(labels, NAMES) == []
    assert np.isin(planted, flag_label_issues(labels, softmax(logits))).any()  # with two, cleanlab flags the wrong labels
    assert unaudited_classes(np.zeros(5, dtype=np.int64), ("a", "b")) == []  # "b" has no image: nothing to flag, not named


def test_the_log_line_counts_what_the_record_holds_and_says_when_the_flags_restate_the_errors(synthetic_logits):
    logits, labels = synthetic_logits
    noisy, _ = flip(labels, 0.05, seed=2)
    noisier = logits + np.random.default_rng(1).normal(scale=8.0, size=logits.shape)
    record, _, _ = audit_labels(noisy, {"a": logits, "b": noisier}, NAMES, ("a", "b"))
    for name in ("a", "b"):
        model = record["models"][name]
        c90, c99 = model["suspects_among_confident_failures"]["0.9"], model["suspects_among_confident_failures"]["0.99"]
        text = audit_text(model)
        assert text.startswith(f"{model['flagged']} test labels flagged ({model['errors']['flagged']} of its {model['errors']['n']} errors); ")
        assert f"{c90['flagged']}/{c90['n']} (>=0.9), {c99['flagged']}/{c99['n']} (>=0.99)" in text
        assert model["flags_mirror_errors"]  # both: the errors of `a` are mostly the flipped labels, those of `b` its own
        assert text.endswith(f"the flags cover {100 * model['errors']['share']:.0f}% of its errors, and one model cannot tell its "
                             "confident errors from wrong labels: only labels every model flags are suspects")
    # Planted: flags covering under MIRRORS_ERRORS of the errors carry no such clause.
    few = dict(record["models"]["b"], flags_mirror_errors=False)
    assert audit_text(few).endswith("(>=0.99)")


def test_the_flags_restate_the_errors_from_half_of_them_on():
    """The border of MIRRORS_ERRORS (0.5) on counted masks: 5 of 10 errors flagged is "most", 4 of 10 and 49 of 99 are not,
    and a model without errors has nothing to restate."""
    from stress.analyses.labels import MIRRORS_ERRORS, _share, flags_mirror_errors

    assert MIRRORS_ERRORS == 0.5
    wrong = np.zeros(20, dtype=bool)
    wrong[:10] = True
    for flagged_errors, expected in ((5, True), (4, False), (10, True), (0, False)):
        flagged = np.zeros(20, dtype=bool)
        flagged[:flagged_errors] = True
        flagged[15:] = True  # flags on correct predictions do not count
        assert flags_mirror_errors(_share(flagged, wrong)) is expected, flagged_errors
    wrong99 = np.arange(99) < 99
    assert not flags_mirror_errors(_share(np.arange(99) < 49, wrong99)) and flags_mirror_errors(_share(np.arange(99) < 50, wrong99))
    assert not flags_mirror_errors(_share(np.ones(5, dtype=bool), np.zeros(5, dtype=bool)))
