"""The failure and explanation analyses of merged shard results (tests/conftest.py: small_results)."""

from __future__ import annotations

import pytest

from stress.analyses.explanations import analyse_explanations, explain_cases
from stress.analyses.failures import analyse_failures, failure_gallery, image_characteristics
from stress.config import ModelConfig
from stress.models import create_model


def test_failure_analysis_counts_and_cases(small_results):
    weights, config, images, labels, merged = small_results
    characteristics = image_characteristics(images)
    result = analyse_failures(labels, merged, characteristics, num_cases=3)
    for v in ("baseline", "augmented"):
        wrong = ~merged[v]["correct"]
        assert result[v]["n_errors"] == int(wrong.sum())
        assert result[v]["accuracy"]["acc"] == pytest.approx(1 - wrong.mean())
        cases = result[v]["cases"]
        assert len({(c["true"], c["predicted"]) for c in cases}) == len(cases) == 3
        confidences = [c["confidence"] for c in cases]
        assert confidences == sorted(confidences, reverse=True)
        other = "augmented" if v == "baseline" else "baseline"
        assert all(c["other_predicted"] == merged[other]["predicted"][c["index"]] for c in cases)
    cross = result["cross_model"]["counts"]
    b, a = merged["baseline"]["correct"], merged["augmented"]["correct"]
    assert cross["a_wrong_b_right"] == int((~b & a).sum()) and cross["both_wrong"] == int((~b & ~a).sum())
    models = {}
    for v in weights:
        model = create_model(ModelConfig())
        model.load_state_dict(weights[v])
        models[v] = model.eval()
    maps = explain_cases(models, images, labels, merged, result)
    assert maps["maps_baseline_true"].shape == (6, 32, 32) and (maps["maps_augmented_predicted"] >= 0).all()
    gallery = failure_gallery(images, labels, merged)
    assert (gallery["baseline_confidence"][:-1] >= gallery["baseline_confidence"][1:]).all()


def test_explanation_summary_matches_the_per_image_values(small_results):
    *_, merged = small_results
    result = analyse_explanations(merged)
    m = merged["baseline"]
    wrong = ~m["correct"]
    assert result["baseline"]["centre_share"]["failures"]["mean"] == pytest.approx(m["centre_share_predicted"][wrong].mean())
    assert result["baseline"]["faithfulness"]["n_images"] == 6
    assert result["baseline"]["faithfulness"]["deletion_auc"]["mean"] == pytest.approx(m["faithful_deletion_auc"].mean())
