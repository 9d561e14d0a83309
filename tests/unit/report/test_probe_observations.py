"""The texture and attack rules and sections, single run and sweep: verdicts follow the intervals; one pair is never a verdict."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stress.analyses.adversarial import attacks_over_seeds, summarise_attacks
from stress.analyses.texture import summarise_texture, texture_over_seeds
from stress.perturb.pgd import ATTACKS
from stress.perturb.texture import probes
from stress.report import statements as st
from stress.report.probe_sections import (
    adversarial_robustness, adversarial_shift, attack_section, explanation_moved, texture_reliance, texture_section, texture_shift,
)
from stress.report.sweep_probe_section import probes_over_seeds_section, probes_shift_over_seeds

PROBES = probes(32, 32)


def _texture(seed: int, shuffle: dict[str, float], n=1500, same: bool = False) -> dict:
    """same: shuffling and low-pass filtering at each scale leave the very same images correct (an index of exactly 1)."""
    rng = np.random.default_rng(seed)
    probed = {v: {p: rng.random(n) < shuffle[v] if p.startswith("shuffle") else rng.random(n) < 0.5 for p in PROBES} for v in shuffle}
    if same:
        for v in probed:
            for g in (2, 4, 8):
                probed[v][f"shuffle_{g}"] = probed[v][f"lowpass_{g}"].copy()
    clean = {v: rng.random(n) < 0.8 for v in shuffle}
    return summarise_texture(clean, probed, list(shuffle), classes=10)


def _attacks(seed: int, rates: dict[str, float], n=600, same_class: float | None = None) -> dict:
    rng = np.random.default_rng(seed)
    results = {}
    for v, rate in rates.items():
        r = {"clean": rng.random(n) < 0.8, "autoattack": rng.random(n) < 0.01}
        for a in ATTACKS:
            r[a.name] = rng.random(n) < rate
        r["flip"] = np.where(r["linf_1/255"], 0, -1)
        r["cam_adversarial"] = np.where(r["flip"] >= 0, rng.random(n) * 0.4, np.nan)
        r["cam_random"] = np.where(r["flip"] >= 0, 0.95 + rng.random(n) * 0.05, np.nan)
        if same_class is not None:  # the clean class's map on the adversarial image: moved (low) or as under noise
            r["cam_same_class"] = np.where(r["flip"] >= 0, same_class + rng.random(n) * 0.05, np.nan)
        results[v] = r
    return summarise_attacks(results, list(rates), list(ATTACKS), 20, np.arange(n))


def _summary(**sections) -> dict:
    return {"variants": {"baseline": {}, "augmented": {}}, "dataset": {"source": "synthetic"}, **sections}


def test_texture_rules_lean_by_the_interval_and_a_single_pair_gets_no_verdict():
    record = _texture(0, {"baseline": 0.2, "augmented": 0.8})
    summary = _summary(texture=record)
    found = {o.text.split(":")[0]: o for o in texture_reliance(summary)}
    assert "more from global shape" in found["baseline"].text and "more from local texture" in found["augmented"].text
    assert found["baseline"].verdict == st.EFFECT
    # The other scales are named with their intervals; the lean is said to hold at the headline's scale only where it reverses.
    base = record["models"]["baseline"]["index"]
    head = next(e for e in base if e["grid"] == 4)
    assert head["high"] < 1 and "At the other scales the index is " in found["baseline"].text
    for e in base:
        if e["grid"] != 4:
            assert f"{e['index']:.2f} [{e['low']:.2f}, {e['high']:.2f}] at grid {e['grid']}" in found["baseline"].text
    planted = json.loads(json.dumps(record))
    planted["models"]["baseline"]["index"] = [dict(e, index=1.5, low=1.2, high=1.8) if e["grid"] == 2 else dict(e, index=0.5, low=0.4, high=0.6)
                                               for e in base]
    (flipped,) = [o for o in texture_reliance(_summary(texture=planted)) if o.text.startswith("baseline")]
    assert "(unadjusted 95% intervals): the lean reverses at grid 2, and holds at grid 8." in flipped.text
    # Planted: every other scale on the headline's side: it holds there, and no reversal is claimed.
    same = json.loads(json.dumps(planted))
    same["models"]["baseline"]["index"] = [dict(e, index=0.5, low=0.4, high=0.6) for e in base]
    (kept,) = [o for o in texture_reliance(_summary(texture=same)) if o.text.startswith("baseline")]
    assert "(unadjusted 95% intervals): holds at grid 2 and 8." in kept.text and "reverses" not in kept.text
    (shift,) = texture_shift(summary)
    assert shift.verdict == st.ONE_PAIR and shift.scope == st.INTERVENTION and "One trained pair" in shift.text
    equal = _texture(1, {"baseline": 0.5, "augmented": 0.5}, same=True)
    assert all("about as much" in o.text and o.verdict == st.INCONCLUSIVE for o in texture_reliance(_summary(texture=equal)))
    assert texture_section(summary).title == "Why it fails: texture versus shape"
    assert texture_reliance(_summary()) == [] and "did not run" in texture_section(_summary()).blocks[0].text


def test_attack_rules_report_robust_accuracy_and_a_moved_explanation():
    record = _attacks(0, {"baseline": 0.9, "augmented": 0.3})
    summary = _summary(adversarial=record)
    robust = adversarial_robustness(summary)
    assert len(robust) == 2 and all("AutoAttack at 8/255" in o.text for o in robust)
    (shift,) = adversarial_shift(summary)
    assert shift.verdict == st.ONE_PAIR and shift.evidence["significant_attacks"] >= 6
    moved = explanation_moved(summary)  # a record without the clean class's map: the change of class is named as a confound
    assert len(moved) == 2 and all(o.verdict == st.EFFECT and "change of class as much as of evidence" in o.text for o in moved)
    moved = explanation_moved(_summary(adversarial=_attacks(0, {"baseline": 0.9, "augmented": 0.3}, same_class=0.3)))
    assert all(o.verdict == st.EFFECT and "the evidence for the clean class itself moves more than under noise (" in o.text
               for o in moved)
    moved_record = _attacks(0, {"baseline": 0.9, "augmented": 0.3}, same_class=0.3)
    for o, v in zip(moved, ("baseline", "augmented")):  # the share of the drop that the change of class explains, by hand
        c = moved_record["models"][v]["cam"]
        share = (c["same_class"]["mean"] - c["adversarial"]["mean"]) / (c["random"]["mean"] - c["adversarial"]["mean"])
        fieller = c["class_change_share"]
        assert fieller["low"] < share < fieller["high"]
        assert (f"so {share:.0%} ([{fieller['low']:.0%}, {fieller['high']:.0%}], Fieller's 95% interval over the images) of that "
                "drop is the change of class") in o.text
    for c in (moved_record["models"][v]["cam"] for v in ("baseline", "augmented")):  # an older record: no interval for the share
        del c["class_change_share"]
    for o, v in zip(explanation_moved(_summary(adversarial=moved_record)), ("baseline", "augmented")):
        c = moved_record["models"][v]["cam"]
        share = (c["same_class"]["mean"] - c["adversarial"]["mean"]) / (c["random"]["mean"] - c["adversarial"]["mean"])
        assert f"so {share:.0%} of that drop (a ratio of the means) is the change of class" in o.text
    assert all("clean-class map − random" in o.uncertainty for o in moved)
    # Planted: the clean class's map as stable as under noise gives no effect, whatever the new class's map does.
    kept = explanation_moved(_summary(adversarial=_attacks(0, {"baseline": 0.9, "augmented": 0.3}, same_class=0.95)))
    assert all(o.verdict != st.EFFECT and "what changes is the class" in o.text for o in kept)
    assert attack_section(summary).title == "Why it fails: adversarial robustness"
    # The differences' table and the rule name the interval the record holds: Newcombe's, or t for a record of older code.
    assert shift.uncertainty.startswith("Newcombe's paired 95% intervals for 0/1 outcomes over 600 attacked images")
    assert "Newcombe's paired 95% interval for 0/1 outcomes, over images" in str(attack_section(summary).blocks)
    for d in record["differences"]["augmented"]["by_attack"].values():
        del d["method"]
    assert "paired 95% t-interval, over images" in str(attack_section(summary).blocks)
    assert adversarial_shift(summary)[0].uncertainty.startswith("paired 95% t-intervals over 600 attacked images")
    # The paragraph names the precision the tasks ran in, and says when the cases were recomputed in fp32 instead.
    assert "passes ran in fp32 (the run's --precision), Grad-CAM in fp32. An image" in str(attack_section(summary).blocks)
    record["precision"] = "mixed (bf16, fp32)"
    assert "ran in mixed (bf16, fp32) (the run's --precision), Grad-CAM in fp32; the adversarial cases below were recomputed in fp32. " \
        in str(attack_section(summary).blocks)


def test_over_seeds_verdicts_need_a_holm_significant_difference():
    moved = [_texture(s, {"baseline": 0.2, "augmented": 0.7}) for s in range(3)]
    still = [_texture(s, {"baseline": 0.4 + 0.1 * (s % 2), "augmented": 0.5 - 0.1 * (s % 2)}) for s in range(4)]
    attacked = [_attacks(s, {"baseline": 0.9, "augmented": 0.3}) for s in range(3)]
    summary = {"texture": texture_over_seeds(moved), "adversarial": attacks_over_seeds(attacked)}
    texture, attacks = probes_shift_over_seeds(summary)
    assert texture.verdict == st.EFFECT and texture.scope == st.INTERVENTION and "Holm-significant at scale" in texture.text
    assert attacks.verdict == st.EFFECT and "linf_1/255" in attacks.text
    (texture,) = probes_shift_over_seeds({"texture": texture_over_seeds(still)})
    assert texture.verdict == st.INCONCLUSIVE and "No scale's difference is Holm-significant." in texture.text
    assert probes_over_seeds_section({}) is None and probes_over_seeds_section(summary).title.startswith("Texture reliance")


def test_the_attacked_grad_cam_over_seeds_is_a_t_interval_of_each_seeds_mean():
    """cam_over_seeds against numpy and scipy on the per-seed records: each model's mean over seeds with its t-interval,
    the gap's difference paired by seed; the rule's verdicts follow those intervals, and a sweep holding a seed without
    the clean-class map gets no block at all."""
    from scipy import stats as scipy_stats

    records = [_attacks(s, {"baseline": 0.9, "augmented": 0.3}, same_class=0.3 + 0.02 * s) for s in range(4)]
    cam = attacks_over_seeds(records)["cam"]
    for v in ("baseline", "augmented"):
        gaps = np.array([r["models"][v]["cam"]["same_class_minus_random"]["mean"] for r in records])
        low, high = scipy_stats.t.interval(0.95, df=3, loc=gaps.mean(), scale=scipy_stats.sem(gaps))
        got = cam["models"][v]["same_class_minus_random"]
        assert (got["mean"], got["low"], got["high"]) == pytest.approx((gaps.mean(), low, high))
        shares = [r["models"][v]["cam"]["class_change_share"]["mean"] for r in records]
        assert cam["models"][v]["class_change_share"]["mean"] == pytest.approx(np.mean(shares))
        assert cam["models"][v]["images"] == [r["models"][v]["cam"]["same_class_images"] for r in records]
    base, aug = ([r["models"][v]["cam"]["same_class_minus_random"]["mean"] for r in records] for v in ("baseline", "augmented"))
    d = cam["same_class_minus_random_difference"]
    assert d["mean"] == pytest.approx(np.mean(np.subtract(aug, base)))
    assert d["p"] == pytest.approx(scipy_stats.ttest_rel(aug, base).pvalue)
    summary = {"adversarial": attacks_over_seeds(records)}
    rules = probes_shift_over_seeds(summary)
    per_model = [o for o in rules if o.rule == "explanation_moved_over_seeds"]
    (shift,) = [o for o in rules if o.rule == "explanation_shift_over_seeds"]
    assert [o.verdict for o in per_model] == [st.EFFECT, st.EFFECT] and all(o.scope == st.MODEL for o in per_model)
    assert all("of the new class's drop is the change of class; the clean class's map moves more than under noise." in o.text
               for o in per_model)
    assert shift.scope == st.INTERVENTION and shift.verdict == st.verdict_of(d["low"], d["high"])
    table = str(probes_over_seeds_section(summary).blocks)
    assert "share of the drop that is the change of class" in table and "paired by seed" in table
    # Planted: the clean-class map more stable than under noise in every seed: the opposite of a moved map.
    steady = [_attacks(s, {"baseline": 0.9, "augmented": 0.3}, same_class=0.99) for s in range(4)]
    steady_rules = [o for o in probes_shift_over_seeds({"adversarial": attacks_over_seeds(steady)}) if o.rule == "explanation_moved_over_seeds"]
    assert [o.verdict for o in steady_rules] == [st.NO_EFFECT, st.NO_EFFECT]
    assert all(o.text.endswith("the clean class's map moves less than under noise.") for o in steady_rules)
    # One seed's record from before the share had an interval: no share over seeds, and the sentence leaves it out.
    del records[0]["models"]["baseline"]["cam"]["class_change_share"]
    older = attacks_over_seeds(records)
    assert older["cam"]["models"]["baseline"]["class_change_share"] is None
    (base_rule,) = [o for o in probes_shift_over_seeds({"adversarial": older}) if o.text.startswith("baseline, over")]
    assert "change of class" not in base_rule.text and "n/a" not in base_rule.text
    assert "'n/a'" in str(probes_over_seeds_section({"adversarial": older}).blocks)  # the table's share cell
    assert st.percent_interval({"mean": 0.95, "low": None, "high": None}) == "95% (no interval)" and st.percent_interval(None) == "n/a"
    mixed = records[:3] + [_attacks(9, {"baseline": 0.9, "augmented": 0.3})]  # one seed's shards from before the clean-class map
    assert attacks_over_seeds(mixed)["cam"] is None
    assert not [o for o in probes_shift_over_seeds({"adversarial": attacks_over_seeds(mixed)}) if "explanation" in o.rule]
