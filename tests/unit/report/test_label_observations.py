"""The label-suspect and failure-slice rules and the report section, on planted summaries."""

from __future__ import annotations

from stress.analyses.stats import wilson_interval
from stress.report import statements as st
from stress.report.label_observations import failure_slices, label_suspects
from stress.report.label_section import labels_and_slices
from stress.report.blocks import Table


def share(flagged: int, n: int) -> dict:
    if not n:
        return {"n": 0, "flagged": 0, "share": None, "low": None, "high": None}
    low, high = wilson_interval(flagged, n)
    return {"n": n, "flagged": flagged, "share": flagged / n, "low": low, "high": high}


def audit(confident: dict[str, tuple[int, int]], suspects: int = 150, n: int = 10000, errors_flagged: int = 300) -> dict:
    """One model with 2,000 errors; `confident`: label suspects among its confident failures per threshold, (suspects, failures)."""
    flagged = errors_flagged
    return {"method": "m", "n_images": n, "flagged_by_any_model": flagged, "flagged_by_every_model": suspects, "agreement": {},
            "suspects": [], "mirrors_errors_at": 0.5, "models": {"baseline": {
                "flagged": flagged, "share": flagged / n, "share_interval": list(wilson_interval(flagged, n)),
                "errors": share(errors_flagged, 2000), "correct": share(0, 8000), "flags_mirror_errors": errors_flagged >= 1000,
                "confident_failures": {t: share(*confident[t]) for t in ("0.9", "0.99")},
                "suspects_among_confident_failures": {t: share(*confident[t]) for t in ("0.9", "0.99")}}}}


def summary_with(**blocks) -> dict:
    return {"variants": {"baseline": {}}, **blocks}


def test_over_represented_suspects_are_an_effect_and_equal_shares_are_not():
    found = label_suspects(summary_with(labels=audit({"0.9": (120, 1000), "0.99": (60, 300)})))
    assert [o.verdict for o in found] == [st.EFFECT, st.EFFECT]
    assert "120 (0.120)" in found[0].text and "over-represented" in found[0].text
    same = label_suspects(summary_with(labels=audit({"0.9": (15, 1000), "0.99": (0, 0)})))  # 1.5 % against 1.5 % overall
    assert same[0].verdict == st.INCONCLUSIVE and same[1].verdict == st.INCONCLUSIVE and "no confident failures" in same[1].text
    assert label_suspects(summary_with()) == []


def test_flags_that_cover_most_errors_are_not_read_as_label_errors():
    """Planted: the same over-representation, but the model's flags cover 90 % of its errors (a weak model)."""
    weak = label_suspects(summary_with(labels=audit({"0.9": (120, 1000), "0.99": (60, 300)}, errors_flagged=1800)))
    assert len(weak) == 1 and weak[0].verdict == st.INCONCLUSIVE and "cannot say which failures are the label's fault" in weak[0].text
    assert "1800 of its 2000 errors (0.900)" in weak[0].text


def slices(kept: list[dict], tried: int = 200) -> dict:
    return {"embedding_layer": "classifier.3", "models": {"baseline": {
        "overall_error": 0.25, "tried": tried, "kept": len(kept), "alpha": 0.05, "min_size": 30, "slices": kept,
        "embedding": {"layer": "classifier.3", "projection_variance": [0.3, 0.1]}}}}


def test_kept_slices_are_quoted_with_their_interval_and_none_kept_is_no_effect():
    top = {"rank": 0, "kind": "class", "name": "true class cat", "size": 1000, "errors": 450, "error_rate": 0.45, "lift": 1.8,
           "lift_low": 1.6, "low": 0.40, "high": 0.50, "confidence": 0.9997, "p": 1e-9,
           "top_confusion": {"true_name": "cat", "predicted_name": "dog", "count": 150}}
    effect = failure_slices(summary_with(slices=slices([top])))
    assert effect[0].verdict == st.EFFECT and "true class cat (error 0.450 [0.400, 0.500] on 1000 images, ×1.80)" in effect[0].text
    nothing = failure_slices(summary_with(slices=slices([])))
    assert nothing[0].verdict == st.NO_EFFECT and "No candidate slice of the test set (200 tried)" in nothing[0].text
    untested = failure_slices(summary_with(slices=slices([], tried=0)))
    assert untested[0].verdict == st.INCONCLUSIVE and "no candidate slice has 30 images" in untested[0].text
    section = labels_and_slices(summary_with(labels=audit({"0.9": (120, 1000), "0.99": (60, 300)}), slices=slices([top])))
    tables = [b for b in section.blocks if isinstance(b, Table)]
    assert any(row[1] == "true class cat" and row[4] == "×1.80" and row[5] == "×1.60" for t in tables for row in t.rows)


def test_the_classes_cleanlab_cannot_audit_are_named_in_a_note():
    from stress.report.blocks import Note

    notes = lambda summary: [b.text for b in labels_and_slices(summary).blocks if isinstance(b, Note)]  # noqa: E731
    named = audit({"0.9": (15, 1000), "0.99": (0, 0)}) | {"unaudited_classes": ["cat", "ship"]}
    train = {"method": "m", "n_images": 10, "flagged": 1, "share": 0.1, "share_interval": [0.0, 0.4], "out_of_fold_accuracy": 0.5,
             "errors_flagged": 1, "errors": 5, "per_class": {"cat": 1}, "unaudited_classes": ["ship"]}
    texts = notes(summary_with(labels=named, train_labels=train))
    assert "cleanlab flags nothing in cat, ship: each has a single test image (it needs at least two given labels of a class)" in texts
    assert "cleanlab flags nothing in ship: it has a single training image (it needs at least two given labels of a class)" in texts
    older = audit({"0.9": (15, 1000), "0.99": (0, 0)})  # a labels.json written before the field, or with no such class
    assert not [t for t in notes(summary_with(labels=older)) + notes(summary_with(labels=older | {"unaudited_classes": []}))
                if "flags nothing" in t]
