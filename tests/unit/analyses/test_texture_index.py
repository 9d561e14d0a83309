"""The texture-reliance index and its intervals against hand formulas and a slow bootstrap; planted texture- and shape-reliant models."""

from __future__ import annotations

import numpy as np
import pytest

from stress.analyses.texture import headline_index, resampled_means, summarise_texture, texture_over_seeds
from stress.perturb.texture import probes

PROBES = probes(32, 32)


def _model(rng, n, accuracies: dict[str, float], clean: float):
    """Correctness with the given accuracies per probe, drawn independently per image."""
    return (rng.random(n) < clean), {p: rng.random(n) < accuracies.get(p, 0.5) for p in PROBES}


def _planted(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    texture = _model(rng, n, {"shuffle_2": 0.7, "shuffle_4": 0.6, "shuffle_8": 0.5, "lowpass_2": 0.2, "lowpass_4": 0.3, "lowpass_8": 0.5}, 0.8)
    shape = _model(rng, n, {"shuffle_2": 0.3, "shuffle_4": 0.2, "shuffle_8": 0.15, "lowpass_2": 0.6, "lowpass_4": 0.7, "lowpass_8": 0.75}, 0.8)
    return {"shape": shape[0], "texture": texture[0]}, {"shape": shape[1], "texture": texture[1]}


def test_the_index_is_the_chance_corrected_ratio_and_tells_planted_models_apart():
    clean, probed = _planted()
    record = summarise_texture(clean, probed, ["shape", "texture"], classes=10)
    for v in ("shape", "texture"):
        for entry in record["models"][v]["index"]:
            g, c = entry["grid"], entry["cutoff"]
            shuffle, low = probed[v][f"shuffle_{g}"].mean(), probed[v][f"lowpass_{c:g}"].mean()
            assert entry["index"] == pytest.approx((shuffle - 0.1) / (low - 0.1))
            assert entry["low"] < entry["index"] < entry["high"]
        kept = record["models"][v]["accuracy"]["shuffle_4"]["kept"]
        assert kept == pytest.approx((probed[v]["shuffle_4"].mean() - 0.1) / (clean[v].mean() - 0.1))
    assert headline_index(record, "texture")["low"] > 1 > headline_index(record, "shape")["high"]
    d = record["differences"]["texture"]
    assert d["reference"] == "shape" and all(e["significant"] and e["low"] > 0 for e in d["index"])
    assert all(d["by_probe"][p]["significant"] for p in ("shuffle_4", "lowpass_4"))
    assert {d["by_probe"][p]["method"] for p in d["by_probe"]} == {"newcombe_paired"}  # per-image 0/1 outcomes


def test_two_models_of_the_same_kind_are_not_told_apart():
    rng = np.random.default_rng(3)
    accuracies = {"shuffle_4": 0.4, "lowpass_4": 0.5}
    a, b = _model(rng, 2000, accuracies, 0.8), _model(rng, 2000, accuracies, 0.8)
    record = summarise_texture({"a": a[0], "b": b[0]}, {"a": a[1], "b": b[1]}, ["a", "b"], classes=10)
    head = next(e for e in record["differences"]["b"]["index"] if e["grid"] == 4)
    assert head["low"] < 0 < head["high"] and not head["significant"]


def test_the_bootstrap_means_match_a_slow_resampling_loop():
    rng = np.random.default_rng(0)
    values = {"x": rng.random(50) < 0.3, "y": rng.random(50) < 0.6}
    fast = resampled_means(values, n_boot=7, seed=4)
    generator = np.random.default_rng([4, 0x7E])
    for b in range(7):
        index = generator.integers(0, 50, 50)
        for key in values:
            assert fast[key][b] == pytest.approx(values[key][index].mean())


def test_an_index_at_chance_is_undefined_not_infinite():
    rng = np.random.default_rng(1)
    n = 500
    probed = {p: rng.random(n) < 0.5 for p in PROBES}
    probed["lowpass_4"] = np.zeros(n, dtype=bool)  # below chance: the denominator is negative
    record = summarise_texture({"m": rng.random(n) < 0.8}, {"m": probed}, ["m"], classes=10)
    entry = headline_index(record, "m")
    assert entry["index"] is None and entry["low"] is None and entry["high"] is None


def test_over_seeds_the_difference_is_a_t_interval_over_seeds():
    records = []
    for seed in range(3):
        clean, probed = _planted(n=800, seed=seed)
        records.append(summarise_texture({"baseline": clean["shape"], "augmented": clean["texture"]},
                                         {"baseline": probed["shape"], "augmented": probed["texture"]}, ["baseline", "augmented"], 10))
    over = texture_over_seeds(records)
    assert over["n_seeds"] == 3
    head = next(x for x in over["by_scale"] if x["grid"] == 4)
    per_seed = [r["models"]["augmented"]["index"][1]["index"] - r["models"]["baseline"]["index"][1]["index"] for r in records]
    assert head["difference"]["mean"] == pytest.approx(np.mean(per_seed)) and head["difference"]["low"] > 0
    assert texture_over_seeds(records[:1]) is None
