"""The report sections "Why it fails: texture versus shape" and "Why it fails: adversarial robustness", and their rules.

Rules:
- texture_reliance (about each trained model): the seed's sentence "the model relies on texture
  and global shape", measured: accuracy kept under patch shuffling and under low-pass filtering,
  and the texture-reliance index at the headline scale with its bootstrap interval;
- texture_shift: the paired index difference between models, per scale, Holm over scales
  (verdict "one pair only" for the trained variants);
- adversarial_robustness (about each model): PGD robust accuracy per eps, AutoAttack at 8/255;
- adversarial_shift: paired robust-accuracy differences, Holm over the attacks (one pair only);
- explanation_moved: Grad-CAM similarity between clean and adversarial predictions against random
  signs of the same size.
"""

from __future__ import annotations

from stress.analyses.texture import headline_index
from stress.report.blocks import Figure, Note, Paragraph, Section, make_table
from stress.report.figures import figure_path
from stress.report.statements import (
    EFFECT, INCONCLUSIVE, INTERVENTION, ONE_PAIR, Observation, given_models, interval_text, models_of, number, one_pair, paired_method, signed,
    below_zero_verdict, percent_interval, verdict_of,
)

TEXTURE_TITLE = "Why it fails: texture versus shape"
ATTACK_TITLE = "Why it fails: adversarial robustness"


def _acc(entry: dict) -> str:
    return f"{number(entry['acc'])} {interval_text(entry['low'], entry['high'], sign=False)}"


def _probe_label(name: str) -> str:
    kind, _, value = name.partition("_")
    return {"shuffle": f"shuffle {value}x{value}", "lowpass": f"low-pass {value}", "highpass": f"high-pass {value}"}[kind]


def texture_section(summary: dict) -> Section:
    record = summary.get("texture")
    if not record:
        return Section("texture", TEXTURE_TITLE, (Note("stage texture did not run (--texture-images 0 or --skip-stress)"),))
    models = [v for v in models_of(summary) if v in record["models"]]
    head = record["headline"]
    blocks: list = [Paragraph(
        f"Patch shuffling cuts each image into g x g patches and permutes them (a seeded permutation per image): local texture "
        f"stays, global shape goes. A Gaussian low-pass filter of cut-off c cycles per image keeps coarse shape and removes fine "
        f"texture; the high-pass filter keeps the rest (with the image's mean colour). Every model sees the very same "
        f"{record['images']} probed test images. Accuracy kept is chance-corrected, (acc − 1/K) / (clean acc − 1/K). The "
        f"texture-reliance index at a scale g is (acc under shuffle g − 1/K) / (acc under low-pass g − 1/K): both keep "
        f"structure of about 1/g of the image, the one without shape and the other without texture; above 1 the model keeps "
        f"more from texture. The headline scale is g = {head['grid']}. Accuracy intervals are Wilson 95% over the images; the "
        f"index's are percentile bootstraps over the images ({record['bootstrap']} resamples).")]
    probes = record["probes"]
    blocks.append(make_table(("model", "clean", *(_probe_label(p) for p in probes)),
                             [(v, number(record["models"][v]["clean"]["acc"]), *(_acc(record["models"][v]["accuracy"][p]) for p in probes))
                              for v in models]))
    rows = []
    for v in models:
        for e in record["models"][v]["index"]:
            kept = record["models"][v]["accuracy"]
            rows.append((v, f"{e['grid']} | {e['cutoff']:g}", number(kept[f"shuffle_{e['grid']}"]["kept"]),
                         number(kept[f"lowpass_{e['cutoff']:g}"]["kept"]),
                         f"{number(e['index'], 2)} {interval_text(e['low'], e['high'], 2, sign=False)}"))
    blocks.append(make_table(("model", "scale: grid | cut-off", "kept under shuffling", "kept under low-pass", "texture-reliance index (95% bootstrap)"), rows))
    for other, d in record.get("differences", {}).items():
        blocks.append(make_table(
            (f"{other} − {d['reference']} index", "difference", "95% CI (paired bootstrap over images; unadjusted)", "Holm threshold", "significant after Holm"),
            [(f"{e['grid']} | {e['cutoff']:g}", signed(e["difference"], 2), interval_text(e["low"], e["high"], 2), number(e.get("holm_level"), 4),
              "yes" if e.get("significant") else "no") for e in d["index"]]))
    blocks.append(Figure(figure_path("texture"), "Accuracy under each probe (Wilson 95% bars) and the texture-reliance index by scale."))
    return Section("texture", TEXTURE_TITLE, tuple(blocks))


def attack_section(summary: dict) -> Section:
    record = summary.get("adversarial")
    if not record:
        return Section("adversarial", ATTACK_TITLE, (Note("stage attack did not run (--adversarial-images 0 or --skip-stress)"),))
    models = [v for v in models_of(summary) if v in record["models"]]
    names = [a["name"] for a in record["attacks"]] + [k for k in ("autoattack", "worst_8/255") if record["autoattack"]]
    step = str(record["step_size"]).replace(" eps / steps", f" × eps / {record['steps']}")  # "2.5 eps / steps", as recorded
    blocks: list = [Paragraph(
        f"White-box attacks on {record['images']} test images (a seeded subset), in pixel space through each model's own "
        f"normalisation: PGD with {record['steps']} steps, each of size {step}, from a random start, and "
        + ("AutoAttack (standard version: APGD-CE, APGD-T, FAB-T, Square; torchattacks) at L∞ 8/255, RobustBench's CIFAR-10 "
           "setting. " if record["autoattack"] else f"no AutoAttack ({record.get('autoattack_skipped') or '--no-autoattack'}). ")
        + f"The attacks' forward and backward passes ran in {record.get('precision', 'fp32')} (the run's --precision), Grad-CAM in fp32"
        + ("; the adversarial cases below were recomputed in fp32. " if str(record.get("precision", "")).startswith("mixed") else ". ")
        + "An image is robust at eps if it is correct clean and no attack of that norm at eps or below fooled it, so robust "
          "accuracy never rises with eps. Columns: linf_k/255 is PGD under the L∞ norm with eps k/255 on the [0, 1] pixel "
          "scale (k grey levels), l2_E PGD under the L2 norm with eps E on the [0, 1] scale"
        + (", autoattack AutoAttack alone, and worst_8/255 the images that survive both PGD and AutoAttack at L∞ 8/255"
           if record["autoattack"] else "") + ". Wilson 95% intervals over the attacked images.")]
    blocks.append(make_table(("model", "clean", *names),
                             [(v, _acc(record["models"][v]["clean"]), *(_acc(record["models"][v]["robust"][k]) for k in names)) for v in models]))
    for other, d in record.get("differences", {}).items():
        blocks.append(make_table(
            (f"{other} − {d['reference']} robust accuracy", "difference", f"{paired_method(d['by_attack'].values(), one=True)}, over images; unadjusted",
             "Holm threshold", "significant after Holm"),
            [(k, signed(x["mean"]), interval_text(x["low"], x["high"]), number(x["holm_level"], 4), "yes" if x["significant"] else "no")
             for k, x in d["by_attack"].items()]))
    labels = [f["label"] for f in record["models"][models[0]]["flips"]]
    blocks.append(make_table(("images that flip first at", *labels),
                             [(v, *(str(f["images"]) for f in record["models"][v]["flips"])) for v in models]))
    blocks.append(Paragraph(
        "Does the attack move the explanation? On each correctly classified image an L∞ attack flips, the Pearson correlation "
        "of the clean image's Grad-CAM (of its predicted class) with: the adversarial image's map of its new class; the "
        "adversarial image's map of the clean class, which separates the change of class from the change of evidence; and the "
        "map on the clean image plus random signs of the same L∞ size. Mean and 95% t-intervals over those images."))
    blocks.append(make_table(
        ("Grad-CAM correlation with the clean map", "adversarial image, new class", "adversarial image, clean class",
         "random signs, same L∞ size", "new class − random (paired)", "clean class − random (paired)",
         "share of the drop that is the change of class (Fieller)"),
        [(v, _mean_text(c["adversarial"]), _mean_text(c.get("same_class")), _mean_text(c["random"]),
          _difference_text(c["adversarial_minus_random"]), _difference_text(c.get("same_class_minus_random")),
          percent_interval(c.get("class_change_share")))
         for v in models for c in [record["models"][v]["cam"]]]))
    blocks.append(Figure(figure_path("robust_accuracy"), "Robust accuracy against eps, Wilson 95% bands; stars: AutoAttack at 8/255."))
    blocks.append(Figure(figure_path("adversarial_cases"), "A few images that flip at the smallest eps in both models: the Grad-CAM "
                                                           "of the clean prediction, and on the adversarial image the Grad-CAM of "
                                                           "the new class and of the clean class."))
    return Section("adversarial", ATTACK_TITLE, tuple(blocks))


def _mean_text(entry: dict | None) -> str:
    return "—" if not entry else f"{number(entry['mean'])} {interval_text(entry['low'], entry['high'], sign=False)}"


def _difference_text(entry: dict | None) -> str:
    return "—" if not entry else f"{signed(entry['mean'])} {interval_text(entry['low'], entry['high'])}"


# -- rules --------------------------------------------------------------------
def texture_reliance(summary: dict) -> list[Observation]:
    """How much accuracy each model keeps without global shape and without fine texture, and which it leans on."""
    record = summary.get("texture")
    if not record:
        return []
    out = []
    for v in models_of(summary):
        m, head = record["models"].get(v), headline_index(record, v)
        if not m or not head or head["index"] is None:
            continue
        g, c = head["grid"], head["cutoff"]
        shuffle, low = m["accuracy"][f"shuffle_{g}"], m["accuracy"][f"lowpass_{c:g}"]
        lean = {1: "more from local texture than from global shape", -1: "more from global shape than from local texture",
                0: "about as much from local texture as from global shape"}[_side(head)]
        out.append(Observation(
            rule="texture_reliance",
            text=(f"{v}: with its {g}x{g} patches shuffled (no global shape) it keeps accuracy {number(shuffle['acc'])} "
                  f"({number(shuffle['kept'])} of its above-chance accuracy); low-pass filtered at {c:g} cycles per image (no fine "
                  f"texture) {number(low['acc'])} ({number(low['kept'])}). Its texture-reliance index is {number(head['index'], 2)}: "
                  f"at this scale it keeps {lean}." + _other_scales(m["index"], head)),
            verdict=EFFECT if lean != "about as much from local texture as from global shape" else INCONCLUSIVE,
            uncertainty=f"Wilson 95% over {record['images']} test images for the accuracies; the index "
                        f"{interval_text(head['low'], head['high'], 2, sign=False)} (percentile bootstrap over images)",
            figure=figure_path("texture"),
            evidence={"index": head["index"], "low": head["low"], "high": head["high"], "shuffle": shuffle["acc"], "lowpass": low["acc"]},
        ))
    return out


def _side(entry: dict) -> int:
    """+1 where the index's interval is above 1 (texture), -1 below (shape), 0 where it includes 1."""
    return 1 if entry["low"] is not None and entry["low"] > 1 else -1 if entry["high"] is not None and entry["high"] < 1 else 0


def _other_scales(index: list[dict], head: dict) -> str:
    """The index at the scales other than the headline's, and whether the lean reverses at any of them."""
    others = [e for e in index if e["grid"] != head["grid"] and e["index"] is not None]
    if not others:
        return ""
    listed = ", ".join(f"{number(e['index'], 2)} {interval_text(e['low'], e['high'], 2, sign=False)} at grid {e['grid']}" for e in others)
    if not _side(head):
        return f" At the other scales the index is {listed} (unadjusted 95% intervals)."
    reverses = [str(e["grid"]) for e in others if _side(e) and _side(e) != _side(head)]
    holds = [str(e["grid"]) for e in others if _side(e) == _side(head)]
    verdicts = ([f"the lean reverses at grid {' and '.join(reverses)}"] if reverses else []) + \
               ([f"holds at grid {' and '.join(holds)}"] if holds else [])
    return f" At the other scales the index is {listed} (unadjusted 95% intervals)" + (f": {', and '.join(verdicts)}." if verdicts else ".")


def texture_shift(summary: dict) -> list[Observation]:
    record = summary.get("texture")
    if not record:
        return []
    out, given = [], given_models(summary)
    for other, d in record.get("differences", {}).items():
        rows = [e for e in d["index"] if e["difference"] is not None]
        if not rows:
            continue
        parts = [f"scale {e['grid']}: {signed(e['difference'], 2)} {interval_text(e['low'], e['high'], 2)}"
                 + (" (Holm-significant)" if e["significant"] else "") for e in rows]
        text = f"{other} − {d['reference']} texture-reliance index: {'; '.join(parts)}."
        significant = [e for e in rows if e["significant"]]
        if given:
            verdict = EFFECT if significant else INCONCLUSIVE
        else:
            text, verdict = one_pair(summary, text), ONE_PAIR
        out.append(Observation(
            rule="texture_shift", text=text, verdict=verdict,
            uncertainty=f"paired percentile bootstrap over {record['images']} test images, Holm over {len(rows)} scales"
                        + ("" if given else "; one trained pair"),
            figure=figure_path("texture"),
            evidence={f"scale_{e['grid']}": e["difference"] for e in rows} | {"significant_scales": len(significant)},
            scope=INTERVENTION if not given else "model",
        ))
    return out


def adversarial_robustness(summary: dict) -> list[Observation]:
    record = summary.get("adversarial")
    if not record:
        return []
    out = []
    for v in models_of(summary):
        m = record["models"].get(v)
        if not m:
            continue
        linf = [a for a in record["attacks"] if a["norm"] == "linf"]
        curve = ", ".join(f"{number(m['robust'][a['name']]['acc'])} at {a['label']}" for a in linf)
        aa = m["robust"].get("autoattack")
        half = next((f for f in m["flips"] if f["attack"]), None)
        text = (f"{v}: clean accuracy {number(m['clean']['acc'])} on the attacked images; under L∞ PGD its robust accuracy is {curve}"
                + (f"; under AutoAttack at 8/255 {number(aa['acc'])} {interval_text(aa['low'], aa['high'], sign=False)}" if aa else "")
                + f". {half['images'] if half else 0} correctly classified images flip already at {half['label'] if half else '—'}.")
        worst = aa or m["robust"][linf[-1]["name"]]
        out.append(Observation(
            rule="adversarial_robustness", text=text, verdict=verdict_of(worst["low"] - m["clean"]["acc"], worst["high"] - m["clean"]["acc"]),
            uncertainty=f"Wilson 95% over {record['images']} attacked test images",
            figure=figure_path("robust_accuracy"),
            evidence={"clean": m["clean"]["acc"], **{a["name"]: m["robust"][a["name"]]["acc"] for a in linf},
                      "autoattack": aa["acc"] if aa else None},
        ))
    return out


def adversarial_shift(summary: dict) -> list[Observation]:
    record = summary.get("adversarial")
    if not record:
        return []
    out, given = [], given_models(summary)
    for other, d in record.get("differences", {}).items():
        parts = [f"{k} {signed(x['mean'])} {interval_text(x['low'], x['high'])}" + (" (Holm-significant)" if x["significant"] else "")
                 for k, x in d["by_attack"].items()]
        significant = [k for k, x in d["by_attack"].items() if x["significant"]]
        text = (f"{other} − {d['reference']} robust accuracy: {'; '.join(parts)}. {d['first_to_flip_in_both_count']} images flip at the "
                f"smallest eps in both models.")
        if given:
            verdict = EFFECT if significant else INCONCLUSIVE
        else:
            text, verdict = one_pair(summary, text), ONE_PAIR
        out.append(Observation(
            rule="adversarial_shift", text=text, verdict=verdict,
            uncertainty=f"{paired_method(d['by_attack'].values())} over {record['images']} attacked images, Holm over {len(parts)} attacks"
                        + ("" if given else "; one trained pair"),
            figure=figure_path("robust_accuracy"),
            evidence={"significant_attacks": len(significant), **{k: x["mean"] for k, x in d["by_attack"].items()}},
            scope=INTERVENTION if not given else "model",
        ))
    return out


def _share_text(cam: dict) -> str:
    """", so 95% [94%, 96%] of that drop ... is the change of class": Fieller's interval where the record has it (a ratio of
    the means without one in older records); nothing where the new-class map hardly drops below noise."""
    drop = cam["random"]["mean"] - cam["adversarial"]["mean"]
    if drop <= 0.05:
        return ""
    share = cam.get("class_change_share")
    if share is None or share["mean"] is None:  # a record from before the share had an interval
        mean = (cam["same_class"]["mean"] - cam["adversarial"]["mean"]) / drop
        return f", so {mean:.0%} of that drop (a ratio of the means) is the change of class"
    bounds = ("no interval: the drop is not distinguishable from 0" if share["low"] is None
              else f"[{share['low']:.0%}, {share['high']:.0%}], Fieller's 95% interval over the images")
    return f", so {share['mean']:.0%} ({bounds}) of that drop is the change of class"


def explanation_moved(summary: dict) -> list[Observation]:
    record = summary.get("adversarial")
    if not record:
        return []
    out = []
    for v in models_of(summary):
        c = record["models"].get(v, {}).get("cam")
        if not c or not c["adversarial_minus_random"]:
            continue
        d, same = c["adversarial_minus_random"], c.get("same_class_minus_random")
        text = (f"{v}: on the images an L∞ attack flips, the Grad-CAM of the new class correlates {number(c['adversarial']['mean'])} "
                f"with the clean map, against {number(c['random']['mean'])} under random signs of the same size")
        if same is None:  # a record from before the clean class's map was measured
            text += ("; the maps explain different classes, so this measures the change of class as much as of evidence."
                     if d["high"] is not None and d["high"] < 0 else "; the attack does not move the map distinguishably more than noise of its size.")
            d_used, images = d, c["images"]
        else:
            text += (f". The clean class's own map on the adversarial image still correlates {number(c['same_class']['mean'])}"
                     + _share_text(c)
                     + (f"; the evidence for the clean class itself moves more than under noise ({signed(same['mean'])} "
                        f"{interval_text(same['low'], same['high'])})."
                        if same["high"] is not None and same["high"] < 0 else "; the evidence for the clean class moves no more than under noise: what changes is the class."))
            d_used, images = same, c["same_class_images"]
        out.append(Observation(
            rule="explanation_moved",
            text=text,
            verdict=below_zero_verdict(d_used["low"], d_used["high"]),
            uncertainty=(f"paired 95% t-interval over {images} flipped images, "
                         f"{'clean-class map' if same is not None else 'new-class map'} − random: {signed(d_used['mean'])} "
                         f"{interval_text(d_used['low'], d_used['high'])}"),
            figure=figure_path("adversarial_cases"),
            evidence={"adversarial": c["adversarial"]["mean"], "random": c["random"]["mean"], "difference": d["mean"],
                      "same_class": (c.get("same_class") or {}).get("mean"), "same_class_difference": None if same is None else same["mean"]},
        ))
    return out


PROBE_RULES = (texture_reliance, texture_shift, adversarial_robustness, adversarial_shift, explanation_moved)
