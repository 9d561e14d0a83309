"""Robust accuracy from per-attack results, against a slow per-image loop; paired differences; flips; Grad-CAM similarity."""

from __future__ import annotations

import numpy as np
import pytest

from stress.analyses.adversarial import attacks_over_seeds, robust_flags, summarise_attacks
from stress.evaluate.probe_shards import _correlation
from stress.perturb.pgd import ATTACKS

LINF = [a for a in ATTACKS if a.norm == "linf"]


def _results(rng, n, fooled_rate, clean_rate=0.8, autoattack=True):
    out = {"clean": rng.random(n) < clean_rate}
    for i, a in enumerate(ATTACKS):
        out[a.name] = rng.random(n) < fooled_rate * (1 + i % 4) / 4
    if autoattack:
        out["autoattack"] = rng.random(n) < 0.2
    flip = np.full(n, -1)
    for i, a in reversed(list(enumerate(LINF))):
        flip[out[a.name]] = i
    out["flip"] = flip
    out["cam_adversarial"] = np.where(flip >= 0, rng.random(n) * 0.5, np.nan)
    out["cam_random"] = np.where(flip >= 0, 0.9 + rng.random(n) * 0.1, np.nan)
    out["cam_same_class"] = np.where(flip >= 0, 0.6 + rng.random(n) * 0.3, np.nan)
    return out


def test_robust_flags_match_a_slow_loop_and_never_rise_with_eps():
    rng = np.random.default_rng(0)
    r = _results(rng, 300, 0.6)
    flags = robust_flags(r, list(ATTACKS))
    for i in range(300):
        for norm in ("linf", "l2"):
            series = sorted((a for a in ATTACKS if a.norm == norm), key=lambda a: a.eps)
            for k, a in enumerate(series):
                expected = bool(r["clean"][i]) and not any(r[b.name][i] for b in series[: k + 1])
                assert flags[a.name][i] == expected
        assert flags["autoattack"][i] == (bool(r["clean"][i]) and bool(r["autoattack"][i]))
        assert flags["worst_8/255"][i] == (flags["autoattack"][i] and flags["linf_8/255"][i])
    for series in (LINF, [a for a in ATTACKS if a.norm == "l2"]):
        rates = [flags[a.name].mean() for a in series]
        assert rates == sorted(rates, reverse=True)
    assert "autoattack" not in robust_flags({k: v for k, v in r.items() if k != "autoattack"}, list(ATTACKS))


def test_the_summary_separates_a_weaker_model_and_counts_flips_of_correct_images_only():
    rng = np.random.default_rng(1)
    n = 1000
    strong, weak = _results(rng, n, 0.3), _results(rng, n, 0.9)
    record = summarise_attacks({"weak": weak, "strong": strong}, ["weak", "strong"], list(ATTACKS), 20, np.arange(n) * 3)
    d = record["differences"]["strong"]["by_attack"]
    assert d["linf_8/255"]["significant"] and d["linf_8/255"]["mean"] > 0
    assert not d["autoattack"]["significant"]  # the same rate in both
    # Differences of per-image 0/1 robustness: Newcombe's paired interval and McNemar's test on the flags themselves.
    from stress.analyses.stats import paired_proportion_difference

    expected = paired_proportion_difference(robust_flags(weak, list(ATTACKS))["l2_0.5"], robust_flags(strong, list(ATTACKS))["l2_0.5"])
    assert {k: d["l2_0.5"][k] for k in expected} == expected and expected["method"] == "newcombe_paired"
    m = record["models"]["weak"]
    assert m["robust"]["linf_2/255"]["acc"] == pytest.approx(robust_flags(weak, list(ATTACKS))["linf_2/255"].mean())
    counted = [f["images"] for f in m["flips"]]
    assert counted[0] == int(((weak["flip"] == 0) & weak["clean"]).sum()) and sum(counted) == int(weak["clean"].sum())
    assert m["first_to_flip_count"] == counted[0] and all(i % 3 == 0 for i in m["first_to_flip"])
    both = (weak["flip"] == 0) & (strong["flip"] == 0) & weak["clean"] & strong["clean"]
    assert record["differences"]["strong"]["first_to_flip_in_both_count"] == int(both.sum())
    cam = m["cam"]
    used = weak["clean"] & (weak["flip"] >= 0)
    assert cam["images"] == int(used.sum()) and cam["adversarial"]["mean"] == pytest.approx(weak["cam_adversarial"][used].mean())
    assert cam["adversarial_minus_random"]["high"] < 0
    # The clean class's map on the adversarial image, over the same images: its mean and its paired difference to noise,
    # against numpy on the per-image values (t-interval: mean +/- t * sd / sqrt(n)).
    from scipy import stats as scipy_stats

    same, noise = weak["cam_same_class"][used], weak["cam_random"][used]
    assert cam["same_class_images"] == int(used.sum()) and cam["same_class"]["mean"] == pytest.approx(same.mean())
    d = same - noise
    half = scipy_stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    got = cam["same_class_minus_random"]
    assert (got["mean"], got["low"], got["high"]) == pytest.approx((d.mean(), d.mean() - half, d.mean() + half))
    # The share of the new-class map's drop below noise that the clean-class map does not share, over the flipped, correctly
    # classified images that have all three maps: picked by a per-image loop, with some clean-class maps planted missing,
    # and Fieller's interval checked against the bisection of scipy's t-test (tests/reference_stats.py).
    from reference_stats import accepted_ratio_bounds

    gappy = {k: v.copy() for k, v in weak.items()}
    gappy["cam_same_class"][np.flatnonzero(used)[::7]] = np.nan
    share = summarise_attacks({"weak": gappy}, ["weak"], list(ATTACKS), 20, np.arange(n))["models"]["weak"]["cam"]["class_change_share"]
    top, bottom = [], []
    for i in range(n):
        a, r, c = gappy["cam_adversarial"][i], gappy["cam_random"][i], gappy["cam_same_class"][i]
        if gappy["clean"][i] and not (np.isnan(a) or np.isnan(r) or np.isnan(c)):
            top.append(c - a)
            bottom.append(r - a)
    top, bottom = np.array(top), np.array(bottom)
    assert share["n"] == len(top) < int(used.sum())
    assert share["mean"] == pytest.approx(top.mean() / bottom.mean(), rel=1e-12)
    assert (share["low"], share["high"]) == pytest.approx(accepted_ratio_bounds(top, bottom), rel=1e-7)
    assert (share["low"], share["high"]) != pytest.approx(accepted_ratio_bounds(bottom - top, bottom), rel=1e-7)  # planted: 1 - share
    old = summarise_attacks({"weak": {k: v for k, v in weak.items() if k != "cam_same_class"}}, ["weak"], list(ATTACKS), 20, np.arange(n))
    assert old["models"]["weak"]["cam"]["same_class"] is None and old["models"]["weak"]["cam"]["same_class_minus_random"] is None


def test_grad_cam_correlation_is_pearsons_and_undefined_for_a_flat_map():
    rng = np.random.default_rng(0)
    import torch

    a, b = torch.tensor(rng.random((3, 4, 4))), torch.tensor(rng.random((3, 4, 4)))
    b[1] = a[1] * 2 + 1  # a linear function of a: correlation 1
    b[2] = 0.0  # flat
    r = _correlation(a, b)
    assert r[0] == pytest.approx(np.corrcoef(a[0].flatten(), b[0].flatten())[0, 1])
    assert r[1] == pytest.approx(1.0) and np.isnan(r[2])


def test_over_seeds_differences_are_t_intervals_over_seeds():
    rng = np.random.default_rng(2)
    records = [summarise_attacks({"baseline": _results(rng, 400, 0.9), "augmented": _results(rng, 400, 0.3)}, ["baseline", "augmented"],
                                 list(ATTACKS), 20, np.arange(400)) for _ in range(3)]
    over = attacks_over_seeds(records)
    per_seed = [r["models"]["augmented"]["robust"]["linf_8/255"]["acc"] - r["models"]["baseline"]["robust"]["linf_8/255"]["acc"] for r in records]
    assert over["by_attack"]["linf_8/255"]["difference"]["mean"] == pytest.approx(np.mean(per_seed))
    assert over["by_attack"]["linf_8/255"]["difference"]["n"] == 3 and attacks_over_seeds(records[:1]) is None
