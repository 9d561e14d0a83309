"""Failure slices: a planted weak colour range is the top slice, errors at random give none, and the statistics
agree with their formulas (score test and Wilson interval, Holm thresholds, hue against colorsys)."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from stress.analyses.failures import image_characteristics
from stress.analyses.slices import (
    Candidate, candidate_slices, cluster_embeddings, find_slices, mean_hue, quarter_bins, score_test_p,
)
from stress.analyses.stats import holm_levels, wilson_interval
from stress.config import ModelConfig
from stress.models import create_model, embed, embedding_layer

NAMES = tuple(f"c{i}" for i in range(10))


def tinted_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise images with a random colour cast each; returns images (n, 3, 32, 32) uint8 and the cast's hue in degrees."""
    rng = np.random.default_rng(seed)
    hue = rng.uniform(0, 360, n)
    cast = np.array([colorsys.hsv_to_rgb(h / 360, 0.7, 0.8) for h in hue]) * 255  # (n, 3)
    images = cast[:, :, None, None] + rng.normal(0, 25, (n, 3, 32, 32))
    return np.clip(images, 0, 255).astype(np.uint8), hue


def slices_for(images, labels, correct, seed=0):
    predicted = np.where(correct, labels, (labels + 1) % 10)
    candidates = candidate_slices(labels, NAMES, image_characteristics(images), mean_hue(images))
    return find_slices(correct, candidates, labels, predicted, NAMES)


def test_a_planted_weak_colour_range_is_the_top_slice():
    images, hue = tinted_images(2000, seed=0)
    labels = np.arange(2000) % 10
    rng = np.random.default_rng(1)
    red = (hue >= 330) | (hue < 30)  # the "mean colour red" sector
    correct = np.where(red, rng.random(2000) > 0.5, rng.random(2000) > 0.1)  # the model fails on half of the reddish images
    found = slices_for(images, labels, correct)
    top = found["slices"][0]
    assert top["name"] == "mean colour red" and top["size"] == int(red.sum())
    assert top["low"] > found["overall_error"] and top["lift"] > 2
    assert all(s["kind"] in ("hue", "class+hue") for s in found["slices"])  # nothing else is worse than overall


def test_errors_at_random_give_no_slice():
    images, _ = tinted_images(2000, seed=0)
    labels = np.arange(2000) % 10
    correct = np.random.default_rng(2).random(2000) > 0.2
    found = slices_for(images, labels, correct)
    assert found["tried"] > 100 and found["kept"] == 0 and found["slices"] == []


def test_without_holm_the_random_errors_would_give_slices():
    """Planted: the same random errors tested one by one at 5% do find 'slices', so the correction is what removes them."""
    images, _ = tinted_images(2000, seed=0)
    labels = np.arange(2000) % 10
    correct = np.random.default_rng(2).random(2000) > 0.2
    found = slices_for(images, labels, correct)
    p0 = found["overall_error"]
    uncorrected = [t for t in found["tested"] if t["errors"] / t["size"] > p0 and score_test_p(t["errors"], t["size"], p0) < 0.05]
    assert len(uncorrected) >= 1


def test_a_kept_slice_interval_is_the_inverted_score_test():
    """Wilson at confidence 1 - p (p the score test's p-value) has the null rate on its boundary; a slow loop
    gives Holm's thresholds."""
    for errors, n, p0 in ((30, 100, 0.2), (7, 40, 0.05), (55, 60, 0.7)):
        p = score_test_p(errors, n, p0)
        low, high = wilson_interval(errors, n, confidence=1 - p)
        assert min(abs(low - p0), abs(high - p0)) < 1e-9
    pvalues = [0.03, 0.001, 0.2, 0.001, 0.04]
    order = sorted(range(5), key=lambda i: (pvalues[i], i))
    slow = {i: 0.05 / (5 - rank) for rank, i in enumerate(order)}
    assert holm_levels(pvalues) == [slow[i] for i in range(5)]


def test_mean_hue_matches_colorsys():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (200, 3, 4, 4), dtype=np.uint8)
    names = mean_hue(images)
    sectors = ("red", "yellow", "green", "cyan", "blue", "magenta")
    for image, name in zip(images, names):
        h, s, _ = colorsys.rgb_to_hsv(*(image.reshape(3, -1).mean(axis=1) / 255.0))
        assert name == ("grey" if s < 0.15 else sectors[int(((h * 360 + 30) % 360) // 60)])


def test_quarters_split_the_test_set_evenly_and_candidates_need_enough_images():
    values = np.random.default_rng(4).normal(size=1000)
    bins, ranges = quarter_bins(values)
    assert np.bincount(bins).tolist() == [250, 250, 250, 250] and len(ranges) == 4
    labels = np.arange(100) % 10
    tiny = [Candidate("class", "ten images", labels == 0)]
    assert find_slices(labels != 0, tiny, labels, labels, NAMES, min_size=30)["tried"] == 0


def test_embeddings_are_the_input_of_the_last_linear_layer():
    """SimpleCNN: the hidden layer's ReLU output, computed here by hand from its modules."""
    torch.manual_seed(0)
    model = create_model(ModelConfig(widths=(8, 16, 32), hidden=24)).eval()
    x = torch.randn(5, 3, 32, 32)
    assert embedding_layer(model) == "classifier.3"
    by_hand = model.classifier[2](model.classifier[1](model.classifier[0](model.features(x))))
    torch.testing.assert_close(embed(model, x, "classifier.3"), by_hand)
    assert embedding_layer(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())) is None


def test_clusters_recover_separated_groups():
    rng = np.random.default_rng(5)
    centres = rng.normal(scale=10, size=(4, 16))
    truth = np.repeat(np.arange(4), 100)
    points = centres[truth] + rng.normal(size=(400, 16))
    found = cluster_embeddings(points, seed=0, clusters=4)
    # Each found cluster is one true group (a relabelling): the contingency table has one non-zero cell per row.
    table = np.zeros((4, 4), dtype=int)
    np.add.at(table, (truth, found), 1)
    assert sorted(table.max(axis=1).tolist()) == [100] * 4


@pytest.mark.parametrize("p0", [0.0, 1.0])
def test_a_model_without_errors_or_without_successes_has_no_slices(p0):
    labels = np.arange(100) % 10
    correct = np.full(100, p0 == 0.0)
    found = find_slices(correct, [Candidate("class", "half", labels < 5)], labels, labels, NAMES)
    assert found["slices"] == [] and found["overall_error"] == p0


def test_a_weak_class_is_one_slice_not_one_per_bin_and_a_weak_conjunction_is_kept():
    images, hue = tinted_images(3000, seed=6)
    labels = np.arange(3000) % 10
    rng = np.random.default_rng(7)
    red = (hue >= 330) | (hue < 30)
    # Planted: class 2 fails at 45 % everywhere; class 5 fails at 70 % on reddish images only; elsewhere 10 %.
    rate = np.where(labels == 2, 0.45, np.where((labels == 5) & red, 0.7, 0.1))
    found = slices_for(images, labels, rng.random(3000) >= rate)
    names = [s["name"] for s in found["slices"]]
    assert "true class c2" in names and not any(n.startswith("c2, ") for n in names) and found["inherited"] > 0
    assert "c5, mean colour red" in names
