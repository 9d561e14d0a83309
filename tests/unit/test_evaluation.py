"""Sharding, merging and the failure/explanation analysis on small hand-built results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stress.analysis import analyse_explanations, analyse_failures, explain_cases, failure_gallery
from stress.config import ModelConfig
from stress.evaluation import merge_shards, shard_bounds
from stress.failures import image_characteristics
from stress.models import create_model
from stress.shards import evaluate_shard


@pytest.mark.parametrize("n, shards", [(10, 3), (7, 7), (5, 9), (10000, 4), (1, 1)])
def test_shard_bounds_cover_every_index_once(n, shards):
    bounds = shard_bounds(n, shards)
    covered = np.concatenate([np.arange(a, b) for a, b in bounds])
    np.testing.assert_array_equal(covered, np.arange(n))
    assert all(b > a for a, b in bounds) and len(bounds) == min(n, shards)


def test_merge_rejects_missing_or_duplicated_images():
    part = lambda a, b: {"indices": np.arange(a, b), "predicted": np.zeros(b - a), "seconds_predict": np.array([1.0])}  # noqa: E731
    merged = merge_shards([part(5, 10), part(0, 5)], 10)
    np.testing.assert_array_equal(merged["indices"], np.arange(10))
    assert merged["seconds_predict"][0] == 2.0
    with pytest.raises(RuntimeError, match="exactly once"):
        merge_shards([part(0, 5), part(4, 10)], 10)
    with pytest.raises(RuntimeError, match="exactly once"):
        merge_shards([part(0, 5)], 10)


@pytest.fixture(scope="module")
def small_results():
    torch.manual_seed(0)
    weights = {v: create_model(ModelConfig()).state_dict() for v in ("baseline", "augmented")}
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(60) % 10
    config = {"name": "simple_cnn", "widths": [32, 64, 128], "hidden": 256, "num_classes": 10, "in_channels": 3, "image_size": 32}
    merged = {
        v: merge_shards([evaluate_shard(weights[v], config, images, labels, a, b, faithfulness_every=10, faithfulness_steps=4)
                         for a, b in shard_bounds(60, 3)], 60)
        for v in weights
    }
    return weights, config, images, labels, merged


def test_sharded_evaluation_equals_one_pass_and_faithfulness_subset(small_results):
    weights, config, images, labels, merged = small_results
    whole = evaluate_shard(weights["baseline"], config, images, labels, 0, 60, faithfulness_every=10, faithfulness_steps=4)
    np.testing.assert_array_equal(merged["baseline"]["predicted"], whole["predicted"])
    np.testing.assert_allclose(merged["baseline"]["centre_share_predicted"], whole["centre_share_predicted"], atol=1e-6)
    np.testing.assert_array_equal(merged["baseline"]["faithful_indices"], np.arange(0, 60, 10))


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


def test_a_checkpoint_from_another_architecture_is_a_one_line_error(tmp_path):
    from stress.artifacts import RunFolder, save_torch
    from stress.errors import StressError
    from stress.evaluation import load_weights

    run = RunFolder(tmp_path / "run")
    wide = create_model(ModelConfig(widths=(16, 32, 64))).state_dict()
    for variant in ("baseline", "augmented"):
        save_torch(run.variant_dir(variant) / "model.pt", {"model": wide})
    config = {"name": "simple_cnn", "widths": [32, 64, 128], "hidden": 256, "num_classes": 10, "in_channels": 3, "image_size": 32}
    with pytest.raises(StressError) as error:
        load_weights(run, config)
    message = str(error.value)
    assert "model.pt: checkpoint does not match the configured model" in message and "\n" not in message
