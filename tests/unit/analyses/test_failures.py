"""Failure mining against slow references: Python loops, per-image numpy, per-pixel Sobel, hand values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import stress.analyses.failures as failures
from stress.analyses.failures import EDGE_THRESHOLD, compare_groups, cross_model, image_characteristics, mine_failures, select_cases
from stress.constants import CLASSES
from stress.errors import StressError


def random_predictions(n: int, seed: int, sharpness: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (n, 10) with a spread of confidences, and labels agreeing ~half the time."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 10)) * rng.uniform(0.5, sharpness, size=(n, 1))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.where(rng.random(n) < 0.5, probs.argmax(axis=1), rng.integers(0, 10, n))
    return probs, labels


def loop_predictions(probs: np.ndarray) -> tuple[list[int], list[float]]:
    predicted, confidence = [], []
    for row in probs:
        best = 0
        for j in range(len(row)):
            if row[j] > row[best]:
                best = j
        predicted.append(best)
        confidence.append(float(row[best]))
    return predicted, confidence


def loop_ranked_errors(probs: np.ndarray, labels: np.ndarray) -> list[int]:
    predicted, confidence = loop_predictions(probs)
    errors = [i for i in range(len(labels)) if predicted[i] != labels[i]]
    return sorted(errors, key=lambda i: (-confidence[i], i))


# ---------------------------------------------------------------- mine_failures / select_cases


def test_classes_are_cifar10():
    assert len(CLASSES) == 10 and CLASSES[0] == "airplane" and CLASSES[-1] == "truck"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mine_failures_matches_loops(seed):
    probs, labels = random_predictions(300, seed)
    result = mine_failures(probs, labels, thresholds=(0.5, 0.9), top_pairs=5)
    predicted, confidence = loop_predictions(probs)
    errors = [i for i in range(300) if predicted[i] != labels[i]]
    assert result["n_images"] == 300
    assert result["n_errors"] == len(errors) > 0
    assert result["error_rate"] == pytest.approx(len(errors) / 300)
    for threshold in (0.5, 0.9):
        assert result["confident_errors"][str(threshold)] == sum(confidence[i] >= threshold for i in errors)
    pair_counts: dict[tuple[int, int], int] = {}
    for i in errors:
        pair = (int(labels[i]), predicted[i])
        pair_counts[pair] = pair_counts.get(pair, 0) + 1
    expected = sorted(pair_counts.items(), key=lambda item: (-item[1], item[0]))[:5]
    assert [(c["true"], c["predicted"], c["count"]) for c in result["top_confusions"]] == [
        (true, pred, count) for (true, pred), count in expected
    ]
    for confusion in result["top_confusions"]:
        assert confusion["share_of_errors"] == pytest.approx(confusion["count"] / len(errors))
    assert result["ranked_error_indices"] == loop_ranked_errors(probs, labels)
    json.dumps(result, allow_nan=False)  # plain Python types only
    assert all(type(i) is int for i in result["ranked_error_indices"])


def test_mine_failures_hand_case_with_ties():
    probs = np.array(
        [
            [0.95, 0.05, 0.0],  # label 1 -> error (1 -> 0), confidence 0.95
            [0.2, 0.8, 0.0],  # label 1 -> correct
            [0.0, 0.05, 0.95],  # label 0 -> error (0 -> 2), confidence 0.95 (tie with image 0)
            [0.6, 0.4, 0.0],  # label 1 -> error (1 -> 0), confidence 0.6
            [0.0, 0.0, 1.0],  # label 2 -> correct
        ]
    )
    labels = np.array([1, 1, 0, 1, 2])
    result = mine_failures(probs, labels, thresholds=(0.9, 0.99))
    assert result["n_errors"] == 3 and result["error_rate"] == pytest.approx(0.6)
    assert result["confident_errors"] == {"0.9": 2, "0.99": 0}
    assert result["top_confusions"] == [
        {"true": 1, "predicted": 0, "count": 2, "share_of_errors": pytest.approx(2 / 3)},
        {"true": 0, "predicted": 2, "count": 1, "share_of_errors": pytest.approx(1 / 3)},
    ]
    assert result["ranked_error_indices"] == [0, 2, 3]


def test_mine_failures_without_errors_and_bad_shapes():
    probs = np.eye(4)
    result = mine_failures(probs, np.arange(4))
    assert result["n_errors"] == 0 and result["top_confusions"] == [] and result["ranked_error_indices"] == []
    assert result["confident_errors"] == {"0.9": 0, "0.99": 0}
    with pytest.raises(StressError):
        mine_failures(probs, np.arange(3))


def select_cases_reference(probs, labels, k, min_cases):
    ranked = loop_ranked_errors(probs, labels)
    predicted, _ = loop_predictions(probs)
    chosen, seen = [], set()
    for i in ranked:
        pair = (int(labels[i]), predicted[i])
        if pair not in seen and len(chosen) < k:
            seen.add(pair)
            chosen.append(i)
    target = min(min_cases, k, len(ranked))
    for i in ranked:
        if len(chosen) >= target:
            break
        if i not in chosen:
            chosen.append(i)
    return sorted(chosen, key=ranked.index)


@pytest.mark.parametrize("seed, k", [(0, 8), (1, 3), (2, 20)])
def test_select_cases_matches_loop(seed, k):
    probs, labels = random_predictions(200, seed)
    cases = select_cases(probs, labels, k=k)
    assert cases == select_cases_reference(probs, labels, k, 3)
    assert len(cases) == k  # 200 images give far more than 20 distinct confusions
    predicted = probs.argmax(axis=1)
    assert len({(labels[i], predicted[i]) for i in cases}) == len(cases)


def test_select_cases_few_pairs_and_top_up():
    # Every error is the same confusion (0 -> 1), with confidences 0.6, 0.9, 0.7, 0.8.
    probs = np.array([[0.4, 0.6], [0.1, 0.9], [0.3, 0.7], [0.2, 0.8], [0.9, 0.1]])
    labels = np.array([0, 0, 0, 0, 0])
    assert select_cases(probs, labels, k=8, min_cases=1) == [1]  # one distinct pair exists
    assert select_cases(probs, labels, k=8, min_cases=3) == [1, 3, 2]  # topped up, confidence order
    assert select_cases(probs, labels, k=2, min_cases=3) == [1, 3]  # never more than k
    assert select_cases(probs, labels, k=8, min_cases=10) == [1, 3, 2, 0]  # runs out of errors
    assert select_cases(np.eye(3), np.arange(3)) == []


# ---------------------------------------------------------------- image characteristics


def sobel_loop(luma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel Sobel gx, gy with replicate padding (indices clamped at the border)."""
    height, width = luma.shape
    kernel_x = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    gx, gy = np.zeros_like(luma), np.zeros_like(luma)
    for y in range(height):
        for x in range(width):
            for i in range(3):
                for j in range(3):
                    value = luma[min(max(y + i - 1, 0), height - 1), min(max(x + j - 1, 0), width - 1)]
                    gx[y, x] += kernel_x[i][j] * value
                    gy[y, x] += kernel_x[j][i] * value
    return gx, gy


def shifted_sobel(luma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel from shifted copies of an edge-padded image (a second, loop-free numpy reference)."""
    p = np.pad(luma, 1, mode="edge")
    h, w = luma.shape
    window = lambda dy, dx: p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]  # noqa: E731
    gx = (window(-1, 1) + 2 * window(0, 1) + window(1, 1)) - (window(-1, -1) + 2 * window(0, -1) + window(1, -1))
    gy = (window(1, -1) + 2 * window(1, 0) + window(1, 1)) - (window(-1, -1) + 2 * window(-1, 0) + window(-1, 1))
    return gx, gy


def characteristics_reference(image: np.ndarray) -> dict[str, float]:
    """One uint8 (3, H, W) image, straight from the definitions."""
    r, g, b = image.astype(np.float64)
    luma = (0.299 * r + 0.587 * g + 0.114 * b) / 255.0
    rg, yb = r - g, 0.5 * (r + g) - b
    gx, gy = shifted_sobel(luma)
    energy = gx**2 + gy**2
    h, w = luma.shape
    centre = energy[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2].sum()
    return {
        "brightness": luma.mean(),
        "contrast": math.sqrt(((luma - luma.mean()) ** 2).mean()),
        "colourfulness": math.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * math.sqrt(rg.mean() ** 2 + yb.mean() ** 2),
        "edge_density": (np.sqrt(energy) > EDGE_THRESHOLD).mean(),
        "centre_energy": centre / energy.sum() if energy.sum() > 0 else 0.25,
    }


def test_shifted_sobel_reference_matches_pixel_loop():
    rng = np.random.default_rng(0)
    luma = rng.random((6, 7))
    for fast, slow in zip(shifted_sobel(luma), sobel_loop(luma)):
        np.testing.assert_allclose(fast, slow, atol=1e-12)


def test_edge_density_on_small_image_matches_pixel_loop():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(1, 3, 8, 8), dtype=np.uint8)
    r, g, b = image[0].astype(np.float64)
    gx, gy = sobel_loop((0.299 * r + 0.587 * g + 0.114 * b) / 255.0)
    magnitude = np.sqrt(gx**2 + gy**2)
    result = image_characteristics(image)
    assert result["edge_density"][0] == pytest.approx((magnitude > EDGE_THRESHOLD).mean())
    assert result["centre_energy"][0] == pytest.approx((magnitude[2:6, 2:6] ** 2).sum() / (magnitude**2).sum())


def natural_like_images(n: int, seed: int) -> np.ndarray:
    """Smooth random blobs plus noise, with varied brightness and colour: uint8 (n, 3, 32, 32)."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((n, 3, 4, 4)) * rng.uniform(0.2, 1.0, (n, 1, 1, 1))
    smooth = np.kron(coarse, np.ones((8, 8)))
    noisy = smooth * 255 + rng.normal(0, 8, smooth.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def test_characteristics_match_per_image_reference(monkeypatch):
    monkeypatch.setattr(failures, "_CHUNK", 4)  # several chunks, one of them partial
    images = natural_like_images(10, seed=3)
    result = image_characteristics(images)
    assert set(result) == {"brightness", "contrast", "colourfulness", "edge_density", "centre_energy"}
    for name, values in result.items():
        assert values.shape == (10,) and values.dtype == np.float64
        expected = [characteristics_reference(image)[name] for image in images]
        np.testing.assert_allclose(values, expected, rtol=1e-10, atol=1e-12, err_msg=name)
    assert 0 < result["edge_density"].min() and result["edge_density"].max() < 1  # the threshold bites
    torch_result = image_characteristics(torch.from_numpy(images))
    for name in result:
        np.testing.assert_array_equal(torch_result[name], result[name])


def test_uniform_grey_image():
    result = image_characteristics(np.full((2, 3, 32, 32), 128, dtype=np.uint8))
    np.testing.assert_allclose(result["brightness"], 128 / 255)
    np.testing.assert_allclose(result["contrast"], 0.0, atol=1e-12)
    np.testing.assert_allclose(result["colourfulness"], 0.0, atol=1e-9)
    np.testing.assert_array_equal(result["edge_density"], 0.0)  # replicate padding: no invented frame
    np.testing.assert_array_equal(result["centre_energy"], 0.25)  # no structure: the window's area share


def test_pure_red_image_colourfulness_by_formula():
    image = np.zeros((1, 3, 32, 32), dtype=np.uint8)
    image[:, 0] = 255
    result = image_characteristics(image)
    # rg = 255 and yb = 127.5 everywhere: no spread, so M = 0.3 * sqrt(255^2 + 127.5^2) = 85.53...
    assert result["colourfulness"][0] == pytest.approx(0.3 * math.hypot(255, 127.5))
    assert result["colourfulness"][0] == pytest.approx(85.529, abs=1e-3)
    assert result["brightness"][0] == pytest.approx(0.299)
    assert result["contrast"][0] == pytest.approx(0.0, abs=1e-12)


def test_vertical_step_edge_by_hand():
    # Left half black, right half white: Sobel magnitude 4 on columns 15 and 16, 0 elsewhere.
    image = np.zeros((1, 3, 32, 32), dtype=np.uint8)
    image[..., 16:] = 255
    result = image_characteristics(image)
    assert result["edge_density"][0] == pytest.approx(2 / 32)
    assert result["centre_energy"][0] == pytest.approx(0.5)  # both edge columns, half of the rows
    assert result["contrast"][0] == pytest.approx(0.5)  # luma 0 or 1, half each
    # The same step near the border puts its energy outside the centre window.
    border = np.zeros((1, 3, 32, 32), dtype=np.uint8)
    border[..., 3:] = 255
    assert image_characteristics(border)["centre_energy"][0] == pytest.approx(0.0)


def test_characteristics_reject_bad_input():
    with pytest.raises(StressError):
        image_characteristics(np.zeros((2, 3, 8, 8), dtype=np.float32))
    with pytest.raises(StressError):
        image_characteristics(np.zeros((2, 8, 8), dtype=np.uint8))


# ---------------------------------------------------------------- compare_groups


def hand_cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    pooled = ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    return (a.mean() - b.mean()) / math.sqrt(pooled)


def test_compare_groups_flags_clear_separation_only():
    rng = np.random.default_rng(0)
    n = 60
    group_a = np.arange(n) < 25
    group_b = np.arange(n) >= 30  # images 25..29 belong to neither group
    separated = np.where(group_a, rng.normal(1.0, 0.3, n), rng.normal(0.0, 0.3, n))
    null = rng.normal(0.0, 1.0, n)
    result = compare_groups({"separated": separated, "null": null}, group_a, group_b, seed=0)
    json.dumps(result, allow_nan=False)
    first = result["separated"]
    assert (first["n_a"], first["n_b"]) == (25, 30)
    assert first["mean_a"] == pytest.approx(separated[group_a].mean())
    assert first["mean_b"] == pytest.approx(separated[group_b].mean())
    assert first["cohens_d"] == pytest.approx(hand_cohens_d(separated[group_a], separated[group_b]))
    assert first["cohens_d"] > 2 and 0 < first["d_low"] < first["cohens_d"] < first["d_high"]
    assert first["separates"] is True
    second = result["null"]
    assert second["cohens_d"] == pytest.approx(hand_cohens_d(null[group_a], null[group_b]))
    assert second["d_low"] < 0 < second["d_high"] and second["separates"] is False


def test_compare_groups_small_and_degenerate_groups():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    tiny = compare_groups({"x": values}, values < 2, values >= 2)["x"]  # one image in group a
    assert tiny["n_a"] == 1 and tiny["mean_a"] == 1.0 and tiny["cohens_d"] is None and tiny["separates"] is False
    # Constant, different groups: zero spread, so d is infinite; JSON gets None but the split is flagged.
    constant = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    perfect = compare_groups({"x": constant}, constant == 1, constant == 0)["x"]
    assert perfect["cohens_d"] is None and perfect["separates"] is True
    json.dumps(perfect, allow_nan=False)
    with pytest.raises(StressError):
        compare_groups({"x": values}, np.ones(4, dtype=bool), np.ones(4, dtype=bool))


# ---------------------------------------------------------------- cross_model


def mcnemar_by_hand(b: int, c: int) -> float:
    n = b + c
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def test_cross_model_matches_loops():
    rng = np.random.default_rng(5)
    n = 400
    labels = rng.integers(0, 10, n)
    pred_a = np.where(rng.random(n) < 0.7, labels, rng.integers(0, 10, n))
    pred_b = np.where(rng.random(n) < 0.8, labels, rng.integers(0, 10, n))
    conf_a, conf_b = rng.uniform(0.3, 1.0, n), rng.uniform(0.3, 1.0, n)
    result = cross_model(labels, pred_a, conf_a, pred_b, conf_b, threshold=0.8)
    expected = {"a_wrong_b_right": [], "a_right_b_wrong": [], "both_wrong": [], "both_confidently_wrong": []}
    for i in range(n):
        a_ok, b_ok = pred_a[i] == labels[i], pred_b[i] == labels[i]
        if not a_ok and b_ok:
            expected["a_wrong_b_right"].append(i)
        if a_ok and not b_ok:
            expected["a_right_b_wrong"].append(i)
        if not a_ok and not b_ok:
            expected["both_wrong"].append(i)
            if conf_a[i] >= 0.8 and conf_b[i] >= 0.8:
                expected["both_confidently_wrong"].append(i)
    assert result["indices"] == expected
    assert result["counts"] == {name: len(found) for name, found in expected.items()}
    assert result["n_images"] == n and result["counts"]["both_confidently_wrong"] > 0
    b, c = len(expected["a_wrong_b_right"]), len(expected["a_right_b_wrong"])
    assert b != c
    assert result["mcnemar_p"] == pytest.approx(mcnemar_by_hand(b, c), rel=1e-9)
    json.dumps(result, allow_nan=False)


def test_mcnemar_hand_cases():
    labels = np.zeros(12, dtype=int)
    # 9 images only a gets wrong, 1 only b gets wrong, 2 both right: p = 2 * (1 + 10) / 2^10.
    pred_a = np.array([1] * 9 + [0] * 3)
    pred_b = np.array([0] * 9 + [1] + [0] * 2)
    ones = np.ones(12)
    result = cross_model(labels, pred_a, ones, pred_b, ones)
    assert (result["counts"]["a_wrong_b_right"], result["counts"]["a_right_b_wrong"]) == (9, 1)
    assert result["mcnemar_p"] == pytest.approx(22 / 1024)
    assert cross_model(labels, labels, ones, labels, ones)["mcnemar_p"] == 1.0  # no discordant pairs
    with pytest.raises(StressError):
        cross_model(labels, pred_a[:5], ones, pred_b, ones)


def test_characteristics_separate_only_after_holm_over_all_compared():
    """A characteristic with p = 0.028 (significant alone, bootstrap interval of d excluding 0)
    does not separate once Holm corrects for the five compared; a strong one still does."""
    from scipy import stats as scipy_stats

    from stress.analyses.failures import compare_groups

    rng = np.random.default_rng(0)
    n = 60
    values = {name: rng.standard_normal(2 * n) for name in ("a", "b", "c", "d")}
    values["mild"] = values["a"].copy()
    values["mild"][:n] += 0.4
    values["strong"] = values["b"] + np.r_[np.full(n, 2.0), np.zeros(n)]
    del values["a"]
    group_a, group_b = np.r_[np.ones(n, bool), np.zeros(n, bool)], np.r_[np.zeros(n, bool), np.ones(n, bool)]
    result = compare_groups(values, group_a, group_b)
    p_mild = scipy_stats.ttest_ind(values["mild"][:n], values["mild"][n:], equal_var=False).pvalue
    assert 0.0125 < p_mild < 0.05 and result["mild"]["p"] == pytest.approx(p_mild)
    assert result["mild"]["interval_excludes_zero"] and not result["mild"]["separates"]
    assert result["strong"]["separates"] and result["strong"]["holm_family"] == 5
    # Holm by hand: sorted p-values against 0.05 / (m - rank), stopping at the first failure.
    ps = sorted((entry["p"], name) for name, entry in result.items())
    expected, stopped = {}, False
    for rank, (p, name) in enumerate(ps):
        stopped = stopped or p > 0.05 / (len(ps) - rank)
        expected[name] = not stopped and result[name]["interval_excludes_zero"]
    assert {name: entry["separates"] for name, entry in result.items()} == expected
