"""Robustness metrics against hand computations, and the stress shard against a direct evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stress.analyses.calibration import _ece_intervals, expected_calibration_error_from_confidences, summarise_calibration
from stress.analyses.robustness import summarise_robustness
from stress.config import ModelConfig
from stress.augment import CIFAR10_STATS
from stress.evaluate.predict import predict_logits
from stress.evaluate.shards import corruption_seed, stress_shard
from stress.models import create_model
from stress.perturb.corruptions import corrupt
from stress.perturb.shifts import apply_shift


def _cell(correct):
    correct = np.asarray(correct, dtype=bool)
    return {"correct": correct, "confidence": np.full(len(correct), 0.8, dtype=np.float32),
            "nll": np.ones(len(correct), dtype=np.float32), "brier": np.full(len(correct), 0.5, dtype=np.float32)}


@pytest.fixture
def merged():
    # 4 images, corruptions "a" and "b" at severities 1 and 2, one shift per family.
    cells = {
        "baseline|a|1": [1, 1, 0, 0], "baseline|a|2": [1, 0, 0, 0], "baseline|b|1": [1, 1, 1, 0], "baseline|b|2": [1, 1, 0, 0],
        "augmented|a|1": [1, 1, 1, 0], "augmented|a|2": [1, 1, 0, 0], "augmented|b|1": [1, 1, 1, 1], "augmented|b|2": [1, 1, 1, 0],
        "baseline|translate_2_0|0": [1, 0, 0, 0], "augmented|translate_2_0|0": [1, 1, 1, 0],
        "baseline|rotate_10|0": [1, 1, 0, 0], "augmented|rotate_10|0": [1, 1, 0, 0],
    }
    return {k: _cell(v) for k, v in cells.items()}


def test_a_reference_without_corruption_errors_leaves_the_mce_undefined_without_a_warning(merged):
    """Planted: the reference gets every corrupted image right, so every CE (and mCE) is undefined: None, not NaN."""
    import warnings

    perfect = {k: _cell([1, 1, 1, 1]) if k.startswith("baseline|") else v for k, v in merged.items()}
    clean = {"baseline": np.ones(4, bool), "augmented": np.ones(4, bool)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" would raise here
        result = summarise_robustness(clean, perfect, ["a", "b"], [1, 2], ["translate_2_0", "rotate_10"])
    assert result["augmented"]["ce"] == {"a": None, "b": None}
    assert result["augmented"]["mce"] is None and result["augmented"]["relative_mce"] is None
    # One defined CE is its own mean: the other corruption's undefined one is left out, not counted as 0.
    one = {k: (_cell([1, 0, 1, 1]) if k == "baseline|a|1" else v) for k, v in perfect.items()}
    partly = summarise_robustness(clean, one, ["a", "b"], [1, 2], ["translate_2_0", "rotate_10"])["augmented"]
    assert partly["ce"]["b"] is None and partly["mce"] == pytest.approx(partly["ce"]["a"]) == pytest.approx((0.25 + 0.5) / (0.25 + 0.0))


def test_corruption_accuracy_ce_and_relative_ce_by_hand(merged):
    clean = {"baseline": np.array([1, 1, 1, 0], bool), "augmented": np.array([1, 1, 1, 1], bool)}
    result = summarise_robustness(clean, merged, ["a", "b"], [1, 2], ["translate_2_0", "rotate_10"])
    base, aug = result["baseline"], result["augmented"]
    assert base["by_corruption"]["a"] == [0.5, 0.25] and aug["by_corruption"]["b"] == [1.0, 0.75]
    assert base["mean_corruption_acc"] == pytest.approx((0.5 + 0.25 + 0.75 + 0.5) / 4)
    assert aug["mean_corruption_acc"] == pytest.approx((0.75 + 0.5 + 1.0 + 0.75) / 4)
    # CE_a(aug) = (0.25 + 0.5) / (0.5 + 0.75); baseline CE is 1 by construction.
    assert aug["ce"]["a"] == pytest.approx(0.75 / 1.25) and base["ce"]["a"] == pytest.approx(1.0)
    # relative CE_a(aug) = ((0.25-0) + (0.5-0)) / ((0.5-0.25) + (0.75-0.25)) with clean errors 0 and 0.25.
    assert aug["relative_ce"]["a"] == pytest.approx(0.75 / 0.75)
    assert aug["relative_ce"]["b"] == pytest.approx((0.0 + 0.25) / ((0.25 - 0.25) + (0.5 - 0.25)))
    assert aug["mce"] == pytest.approx(np.mean([0.75 / 1.25, 0.25 / 0.75]))
    assert base["shifts"] == {"translate_2_0": 0.25, "rotate_10": 0.5}
    assert aug["shift_families"] == {"translation": 0.75, "rotation": 0.5}
    gain = result["gain"]
    assert gain["clean"]["mean"] == pytest.approx(0.25)
    # Clean correctness is 0/1 per image: Newcombe's paired interval (the t-interval of [0, 0, 0, 1] is symmetric about
    # 0.25 and reaches below -0.5); each image's accuracy over two severities is not 0/1 here: a t-interval.
    from stress.analyses.stats import paired_proportion_difference

    expected = paired_proportion_difference(clean["baseline"], clean["augmented"])
    assert (gain["clean"]["low"], gain["clean"]["high"], gain["clean"]["method"]) == (expected["low"], expected["high"], "newcombe_paired")
    assert gain["by_corruption"]["a"]["method"] == "t"
    per_image = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]]).mean(0)  # baseline, per image over cells
    per_image_aug = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]]).mean(0)
    assert gain["mean_corruption"]["mean"] == pytest.approx((per_image_aug - per_image).mean())
    assert gain["by_corruption_severity"]["a"] == pytest.approx([0.25, 0.25])
    assert gain["shift_families"]["translation"]["mean"] == pytest.approx(0.5)
    assert base["mean_corruption_acc_interval"][0] < base["mean_corruption_acc"] < base["mean_corruption_acc_interval"][1]


def test_drop_main_set_and_black_border_effect_by_hand(merged):
    # "a" plays gaussian_noise (a main corruption), "b" speckle_noise (an extra one).
    renamed = {k.replace("|a|", "|gaussian_noise|").replace("|b|", "|speckle_noise|"): v for k, v in merged.items()}
    renamed |= {"baseline|zerofill_translate_2_0|0": _cell([0, 0, 0, 0]), "augmented|zerofill_translate_2_0|0": _cell([1, 1, 1, 0])}
    clean = {"baseline": np.array([1, 1, 1, 0], bool), "augmented": np.array([1, 1, 1, 1], bool)}
    shifts = ["translate_2_0", "zerofill_translate_2_0", "rotate_10"]
    result = summarise_robustness(clean, renamed, ["gaussian_noise", "speckle_noise"], [1, 2], shifts)
    base, aug = result["baseline"], result["augmented"]
    assert result["interval_unit"] == "test images of one trained pair" and result["gain"]["unit"] == result["interval_unit"]
    # Drop = clean - mean corruption accuracy: baseline 0.75 - 0.5, augmented 1.0 - 0.75.
    assert base["corruption_drop"] == pytest.approx(0.25) and aug["corruption_drop"] == pytest.approx(0.25)
    per_image_drop = {"baseline": np.array([1, 1, 1, 0]) - np.array([1, 0.75, 0.25, 0]),
                      "augmented": np.array([1, 1, 1, 1]) - np.array([1, 1, 0.75, 0.25])}
    assert result["gain"]["corruption_drop"]["mean"] == pytest.approx((per_image_drop["augmented"] - per_image_drop["baseline"]).mean())
    # Main set: gaussian_noise only (severities 1, 2); frost and the rest are missing.
    assert base["main_corruptions"] == ["gaussian_noise"] and "frost" in base["main_corruptions_missing"]
    assert base["mean_corruption_acc_main"] == pytest.approx((0.5 + 0.25) / 2)
    assert result["gain"]["mean_corruption_main"]["mean"] == pytest.approx((0.75 + 0.5) / 2 - (0.5 + 0.25) / 2)
    # Translation gain: edge fill 0.75 - 0.25 = 0.5, zero fill 0.75 - 0 = 0.75; black-border effect 0.25, a third of 0.75.
    border = result["gain"]["border_effect"]
    assert border["gain_edge_fill"] == pytest.approx(0.5) and border["gain_zero_fill"] == pytest.approx(0.75)
    assert border["mean"] == pytest.approx(0.25) and border["share_of_zero_fill_gain"] == pytest.approx(1 / 3)
    assert aug["shift_families"]["translation_zerofill"] == pytest.approx(0.75)


def test_calibration_summary_per_corruption_and_temperature(merged):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(300, 10)) * 4
    labels = rng.integers(0, 10, 300)
    val_logits, val_labels = rng.normal(size=(200, 10)) * 4, rng.integers(0, 10, 200)
    result = summarise_calibration({"baseline": logits, "augmented": logits}, {"baseline": val_logits, "augmented": val_logits},
                                   labels, val_labels, merged, ["a"], [1, 2], 15)
    entry = result["baseline"]
    expected = expected_calibration_error_from_confidences(merged["baseline|a|1"]["confidence"], merged["baseline|a|1"]["correct"], 15)
    assert entry["ece_by_corruption"]["a"][0] == pytest.approx(expected)
    assert entry["temperature"] > 1  # random over-confident logits: the fit softens them
    assert entry["ece_interval"][0] <= entry["ece"] <= entry["ece_interval"][1]
    assert entry["ece_after_temperature_interval"][0] <= entry["ece_after_temperature"] <= entry["ece_after_temperature_interval"][1]


def test_ece_intervals_bracket_the_point_estimates():
    rng = np.random.default_rng(1)
    logits, labels = rng.normal(size=(500, 10)) * 3, rng.integers(0, 10, 500)
    intervals = _ece_intervals(logits, labels, temperature=2.0, n_bins=15, n_boot=200)
    low, high = intervals["ece_reduction_interval"]
    assert low < high


def test_stress_shard_equals_a_direct_evaluation():
    torch.manual_seed(0)
    models = {v: create_model(ModelConfig()) for v in ("baseline", "augmented")}
    weights = {v: m.state_dict() for v, m in models.items()}
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8).numpy()
    labels = np.arange(12) % 10
    out = stress_shard(weights, ModelConfig().__dict__ | {"widths": [32, 64, 128]}, images, labels, 4, 12,
                       [("gaussian_noise", 3), ("hflip", 0)], seed=7, batch_size=5)
    x = torch.as_tensor(images[4:12])
    # Corrupted in batches of 5 starting at image 4: the seeds follow the global image index.
    noisy = torch.cat([corrupt(x[i:i + 5], "gaussian_noise", 3, corruption_seed(7, "gaussian_noise", 3, 4 + i)) for i in range(0, 8, 5)])
    for v, model in models.items():
        expected = predict_logits(model, noisy, stats=CIFAR10_STATS).argmax(1).numpy() == labels[4:12]
        np.testing.assert_array_equal(out[f"{v}|gaussian_noise|3"]["correct"], expected)
        flipped = predict_logits(model, apply_shift(x, "hflip"), stats=CIFAR10_STATS)
        np.testing.assert_array_equal(out[f"{v}|hflip|0"]["correct"], flipped.argmax(1).numpy() == labels[4:12])
        np.testing.assert_allclose(out[f"{v}|hflip|0"]["confidence"], flipped.softmax(1).max(1).values.numpy(), rtol=1e-5)
