"""Fourier heat maps: a model blind to all but the image mean, the maps' symmetry, and the summaries against slow loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from stress.analyses.fourier import band, heat_map, summarise_fourier
from stress.evaluate.shards import fourier_correct
from stress.perturb.fourier import centred, frequencies

STATS = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


class MeanOnly(nn.Module):
    """Sees only each channel's mean: class 0 when the red mean is above 0.5 (on the [0, 1] scale), else class 1."""

    def forward(self, x):
        red = x[:, 0].mean(dim=(1, 2)) * 0.25 + 0.5  # undo the standardisation of STATS
        return torch.stack([red - 0.5, torch.zeros_like(red)], dim=1) * 100


class RowStripes(nn.Module):
    """Planted: also reads one pixel row, so the vertical frequencies reach it."""

    def forward(self, x):
        red = x[:, 0].mean(dim=(1, 2)) * 0.25 + 0.5 + 3 * x[:, 0, 0].mean(dim=1)
        return torch.stack([red - 0.5, torch.zeros_like(red)], dim=1) * 100


def near_threshold_images(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    means = torch.linspace(100, 156, n)  # around 127.5: a brightness step of 0.125 (norm 4 at (0, 0)) flips many
    noise = torch.randint(-20, 21, (n, 3, 32, 32), generator=generator).float()
    images = (means.view(-1, 1, 1, 1) + noise).clamp(60, 196).round().to(torch.uint8)  # never clipped by the perturbation
    labels = (images[:, 0].float().mean(dim=(1, 2)) / 255 <= 0.5).long()  # what MeanOnly says on the clean image
    return images, labels


def test_a_model_that_sees_only_the_mean_is_blind_to_every_frequency_but_zero():
    images, labels = near_threshold_images()
    freqs = frequencies(32, 32)
    out = fourier_correct({"m": MeanOnly()}, images, labels, freqs, seed=0, start=0, norm=4.0, batch_size=256, stats=STATS)["m"]
    zero = freqs.index((0, 0))
    others = np.delete(out, zero, axis=0)
    assert others.all()  # every other basis image has zero mean: no prediction moves
    assert (~out[zero]).sum() >= 10  # the brightness step flips the images near the threshold
    # Planted: a model that reads a pixel row is not blind, and the same check sees it.
    planted = fourier_correct({"m": RowStripes()}, images, labels, freqs, seed=0, start=0, norm=4.0, batch_size=256, stats=STATS)["m"]
    assert not np.delete(planted, zero, axis=0).all()


def test_results_do_not_depend_on_the_sharding():
    images, labels = near_threshold_images(40)
    freqs = [(0, 0), (0, 1), (3, 5)]
    models = {"a": RowStripes(), "b": MeanOnly()}
    whole = fourier_correct(models, images, labels, freqs, seed=7, start=0, norm=4.0, batch_size=64, stats=STATS)
    parts = [fourier_correct(models, images[a:b], labels[a:b], freqs, seed=7, start=a, norm=4.0, batch_size=7, stats=STATS)
             for a, b in ((0, 13), (13, 40))]
    for v in models:
        np.testing.assert_array_equal(whole[v], np.concatenate([p[v] for p in parts], axis=1))


def test_the_heat_map_is_mirror_symmetric_and_centred():
    freqs = frequencies(8, 8)
    grid = heat_map(np.arange(len(freqs), dtype=float), freqs, 8, 8)
    assert not np.isnan(grid).any()
    # (u, v) and (-u, -v) hold the same value wherever both lie in the grid
    for u in range(-3, 4):
        for v in range(-3, 4):
            assert grid[u + 4, v + 4] == grid[-u + 4, -v + 4]
    assert grid[4, 4] == freqs.index((0, 0))  # the centre is the mean


def test_summaries_match_slow_loops_and_find_the_planted_band():
    rng = np.random.default_rng(0)
    freqs = frequencies(32, 32)
    n = 50
    radii = np.array([math.hypot(centred(a, 32), centred(b, 32)) for a, b in freqs])
    # planted: the reference model fails often at high frequencies, the other one at low frequencies
    p_ref = np.where(radii >= 32 / 3, 0.7, 0.1)
    p_other = np.where(radii < 16 / 3, 0.6, 0.1)
    correct = {"ref": rng.random((len(freqs), n)) > p_ref[:, None], "other": rng.random((len(freqs), n)) > p_other[:, None]}
    clean = {"ref": np.ones(n, bool), "other": np.ones(n, bool)}
    record, arrays = summarise_fourier(clean, correct, freqs, 32, 32, ["ref", "other"], 4.0)
    assert record["models"]["ref"]["most_sensitive_band"] == "high"
    assert record["models"]["other"]["most_sensitive_band"] == "low"
    # slow loop: the band mean is the mean over images of each image's error over the band's frequencies
    members = [i for i, r in enumerate(radii) if band(r, 32, 32) == "middle"]
    per_image = [np.mean([not correct["ref"][f, j] for f in members]) for j in range(n)]
    middle = record["models"]["ref"]["by_band"]["middle"]
    assert middle["mean"] == pytest.approx(np.mean(per_image))
    half = 2.0096 * np.std(per_image, ddof=1) / math.sqrt(n)  # t(0.975, 49)
    assert (middle["low"], middle["high"]) == pytest.approx((np.mean(per_image) - half, np.mean(per_image) + half), abs=1e-4)
    assert middle["frequencies"] == len(members)
    # the paired differences say the other model is worse at low and better at high frequencies, both Holm-significant
    d = record["differences"]["other"]["by_band"]
    assert d["low"]["mean"] > 0.4 and d["low"]["significant"] and d["high"]["mean"] < -0.5 and d["high"]["significant"]
    assert not d["middle"]["significant"]
    np.testing.assert_allclose(arrays["other_minus_ref_heatmap"], arrays["other_heatmap"] - arrays["ref_heatmap"])
    # the radial profile's radius-0 entry is the (0, 0) frequency alone
    assert record["models"]["ref"]["radial"][0]["frequencies"] == 1
    assert record["models"]["ref"]["radial"][0]["mean"] == pytest.approx(1 - correct["ref"][freqs.index((0, 0))].mean())


def seed_record(high_ref: float, high_other: float) -> dict:
    def model(high: float) -> dict:
        by_band = {"low": {"mean": 0.1}, "middle": {"mean": 0.2}, "high": {"mean": high}}
        return {"by_band": by_band, "most_sensitive_band": max(by_band, key=lambda b: by_band[b]["mean"])}

    return {"norm": 4.0, "images": 500, "models": {"baseline": model(high_ref), "augmented": model(high_other)}}


def test_over_seeds_the_band_difference_is_paired_by_seed_and_holm_corrected():
    from scipy import stats as scipy_stats

    from stress.analyses.fourier import fourier_over_seeds

    ref, other = [0.50, 0.60, 0.55, 0.58, 0.52], [0.40, 0.45, 0.41, 0.47, 0.43]
    record = fourier_over_seeds([seed_record(a, b) for a, b in zip(ref, other)])
    high = record["by_band"]["high"]
    differences = np.array(other) - np.array(ref)
    half = scipy_stats.t.ppf(0.975, 4) * differences.std(ddof=1) / math.sqrt(5)
    assert high["difference"]["mean"] == pytest.approx(differences.mean())
    assert (high["difference"]["low"], high["difference"]["high"]) == pytest.approx((differences.mean() - half, differences.mean() + half))
    assert high["significant"] and not record["by_band"]["low"]["significant"]  # low: no difference in any seed
    assert record["most_sensitive_band"]["baseline"] == {"low": 0, "middle": 0, "high": 5}
    # planted: differences of both signs over seeds are not significant
    mixed = fourier_over_seeds([seed_record(a, b) for a, b in zip(ref, [0.60, 0.50, 0.60, 0.50, 0.55])])
    assert not mixed["by_band"]["high"]["significant"]
    # a seed without a heat map, or a single seed: nothing over seeds
    assert fourier_over_seeds([seed_record(0.5, 0.4), None]) is None and fourier_over_seeds([seed_record(0.5, 0.4)]) is None
    assert fourier_over_seeds([seed_record(0.5, 0.4), {"skipped": "images of 224 x 224"}]) is None


def test_the_sweep_rule_gives_an_intervention_verdict_only_for_a_holm_significant_band():
    from stress.analyses.fourier import fourier_over_seeds
    from stress.report import statements as st
    from stress.report.sweep_fourier_section import fourier_over_seeds_section, fourier_shift_over_seeds

    moved = fourier_over_seeds([seed_record(a, b) for a, b in zip([0.5, 0.6, 0.55], [0.4, 0.45, 0.41])])
    (found,) = fourier_shift_over_seeds({"fourier": moved})
    assert found.verdict == st.EFFECT and found.scope == st.INTERVENTION and "Holm-significant: high." in found.text
    still = fourier_over_seeds([seed_record(a, b) for a, b in zip([0.5, 0.6, 0.55], [0.6, 0.5, 0.55])])
    (found,) = fourier_shift_over_seeds({"fourier": still})
    assert found.verdict == st.INCONCLUSIVE and "No band's difference is Holm-significant." in found.text
    assert fourier_over_seeds_section({}) is None and fourier_shift_over_seeds({}) == []
    assert fourier_over_seeds_section({"fourier": moved}).title == "Frequency sensitivity over seeds"
