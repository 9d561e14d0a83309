"""The Fourier rules and section on planted summaries: the band, the verdicts, the line-up with the corruption results."""

from __future__ import annotations

import math

import numpy as np

from stress.analyses.fourier import summarise_fourier
from stress.perturb.fourier import centred, frequencies
from stress.report import statements as st
from stress.report.blocks import Table
from stress.report.fourier_section import fourier_section, fourier_sensitivity, fourier_shift


def planted_record(high_ref: float, high_other: float, n: int = 200) -> dict:
    """baseline fails at high frequencies with probability high_ref, augmented with high_other; 0.05 elsewhere; clean all right."""
    rng = np.random.default_rng(1)
    freqs = frequencies(32, 32)
    radii = np.array([math.hypot(centred(a, 32), centred(b, 32)) for a, b in freqs])
    rate = {"baseline": np.where(radii >= 32 / 3, high_ref, 0.05), "augmented": np.where(radii >= 32 / 3, high_other, 0.05)}
    correct = {v: rng.random((len(freqs), n)) > r[:, None] for v, r in rate.items()}
    clean = {v: np.ones(n, bool) for v in rate}
    record, _ = summarise_fourier(clean, correct, freqs, 32, 32, ["baseline", "augmented"], 4.0)
    return record


def summary_with(record: dict, noise_gain: float | None = None, given: bool = False) -> dict:
    variants = ({"baseline": {"checkpoint": "a.pt"}, "augmented": {"checkpoint": "b.pt"}} if given else
                {"baseline": {"test_acc": 0.7}, "augmented": {"test_acc": 0.75}})
    summary = {"fourier": record, "variants": variants, "dataset": {"source": "cifar10.npz"}}
    if noise_gain is not None:
        entry = {"mean": noise_gain, "low": noise_gain - 0.01, "high": noise_gain + 0.01, "n": 100}
        summary["robustness"] = {"gains": {"augmented": {"by_corruption": {"gaussian_noise": entry, "shot_noise": entry,
                                                                       "fog": {"mean": 0.0, "low": -0.01, "high": 0.01, "n": 100}}}}}
    return summary


def test_the_most_sensitive_band_and_its_rise_over_clean():
    found = fourier_sensitivity(summary_with(planted_record(0.6, 0.3)))
    assert [o.evidence["band"] for o in found] == ["high", "high"]
    assert all(o.verdict == st.EFFECT for o in found)
    assert "baseline: under basis images of norm 4" in found[0].text
    assert "it is most sensitive to high-frequency perturbations (+0.5" in found[0].text and "over the low band" in found[0].text
    assert "paired 95% t-intervals over 200 test images: the rise over clean" in found[0].uncertainty


def test_a_rise_that_is_not_there_is_not_an_effect():
    """Planted: errors at the clean level everywhere (0 rise), so the rule may not claim sensitivity."""
    record = planted_record(0.0, 0.0)
    for v in record["models"].values():
        for b in v["by_band"].values():
            b["over_clean"] = {"mean": 0.001, "low": -0.01, "high": 0.012}
    found = fourier_sensitivity(summary_with(record))
    assert all(o.verdict == st.INCONCLUSIVE for o in found)
    # and with no band above the others, the rule does not name one as the most sensitive
    assert all("but not distinguishably above the" in o.text for o in found)


def test_the_shift_is_one_pair_only_for_trained_variants_and_lines_up_with_noise():
    summary = summary_with(planted_record(0.6, 0.3), noise_gain=0.05)
    (shift,) = fourier_shift(summary)
    assert shift.verdict == st.ONE_PAIR and shift.scope == st.INTERVENTION
    assert "high -0.29" in shift.text and "(Holm-significant)" in shift.text
    assert ("On the noise corruptions (high-frequency), augmented's accuracy differs by +0.050 on average, every one of them on the "
            "same side, and its high-band error differs by -0.294: the two agree") in shift.text
    # fog's interval includes 0: not counted either way
    assert ("fog and contrast (low-frequency), augmented's accuracy differs by +0.000 on average, but not every one of those "
            "corruptions' intervals excludes 0 on the same side: not compared with the low-band error.") in shift.text
    assert shift.evidence["lined_up"] == 1 and shift.evidence["compared"] == 1
    # planted: the noise accuracy moving the other way is reported as against the heat map
    (against,) = fourier_shift(summary_with(planted_record(0.6, 0.3), noise_gain=-0.05))
    assert "differs by -0.050 on average, every one of them on the same side, and its high-band error differs by -0.294: the two disagree" in against.text
    assert against.evidence["lined_up"] == 0 and against.evidence["compared"] == 1
    # planted: one noise corruption's interval on the other side: the noise corruptions are not compared at all
    mixed = summary_with(planted_record(0.6, 0.3), noise_gain=0.05)
    mixed["robustness"]["gains"]["augmented"]["by_corruption"]["shot_noise"] = {"mean": -0.05, "low": -0.06, "high": -0.04, "n": 100}
    (unclear,) = fourier_shift(mixed)
    assert ("noise corruptions (high-frequency), augmented's accuracy differs by +0.000 on average, but not every one of those "
            "corruptions' intervals excludes 0 on the same side: not compared with the high-band error.") in unclear.text
    assert unclear.evidence["compared"] == 0
    # planted: the noise corruptions agree, but no band's difference survives Holm: not compared either
    (flat,) = fourier_shift(summary_with(planted_record(0.3, 0.3), noise_gain=0.05))
    assert "its high-band error difference is not significant after Holm: not compared." in flat.text
    assert flat.evidence["compared"] == 0


def test_given_models_get_a_verdict_about_these_models():
    (shift,) = fourier_shift(summary_with(planted_record(0.6, 0.3), given=True))
    assert shift.verdict == st.EFFECT and shift.scope == st.MODEL
    (same,) = fourier_shift(summary_with(planted_record(0.3, 0.3), given=True))
    assert same.verdict == st.INCONCLUSIVE


def test_the_section_tables_every_band_and_says_when_it_did_not_run():
    section = fourier_section(summary_with(planted_record(0.6, 0.3)))
    tables = [b for b in section.blocks if isinstance(b, Table)]
    assert [row[0] for row in tables[0].rows] == ["baseline", "augmented"] and [row[0] for row in tables[1].rows] == ["low", "middle", "high"]
    assert "did not run" in fourier_section({}).blocks[0].text
    assert "skipped: images of 224" in fourier_section({"fourier": {"skipped": "images of 224 x 224"}}).blocks[0].text
    assert fourier_sensitivity({"fourier": {"skipped": "x"}}) == [] and fourier_shift({}) == []
