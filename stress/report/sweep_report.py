"""The seed-sweep report: figures, sections and observations of a sweep folder.

A sweep folder (jobs/seed_sweep.py) holds one run folder per seed (seed_<s>/), the
sweep's summary.json (kind "sweep": seeds, per_seed, aggregate, stability) and
stability.npz (per-seed wrong flags and the always-wrong images). Everything here reads
those files only. `write_sweep_figures` draws the PNGs; `stress.report.build_report`
calls `compose_sweep` when summary["kind"] == "sweep" and renders the sections with its
own HTML/Markdown machinery. A block missing from the summary becomes a one-line note.
"""

from __future__ import annotations

from dataclasses import dataclass

from stress.analyses.stats import holm_bonferroni, wilson_interval
from stress.artifacts import RunFolder, read_json
from stress.constants import VARIANTS
from stress.report.blocks import MISSING, Figure, Links, Note, Paragraph, Section, make_table
from stress.report.figures import sweep_figure
from stress.report.run_report import model_text, observations
from stress.report.setup_text import commit_text, compile_text, hardware_text, precision_text, seeds_precision
from stress.report.sweep_fourier_section import fourier_over_seeds_section, fourier_shift_over_seeds
from stress.report.sweep_probe_section import probes_over_seeds_section, probes_shift_over_seeds
from stress.report.sweep_summary import check_sweep_summary
from stress.report.sweep_label_section import labels_over_seeds, slice_findings
from stress.report.statements import EFFECT, INCONCLUSIVE, INTERVENTION, NO_EFFECT, Observation, direction, interval_text, number, signed, verdict_of


@dataclass(frozen=True)
class Metric:
    """How a per-seed metric is named and quoted: observations show accuracies in percentage points."""

    key: str
    label: str
    scale: float
    unit: str
    digits: int
    lower_is_better: bool


HEADLINE_METRICS = (
    Metric("test_acc", "test accuracy", 100.0, " points", 2, False),
    Metric("mean_corruption_acc", "mean corruption accuracy", 100.0, " points", 2, False),
    Metric("mean_corruption_acc_main", "mean accuracy over the implemented CIFAR-10-C main corruptions", 100.0, " points", 2, False),
    Metric("corruption_drop", "drop from clean to corrupted accuracy", 100.0, " points", 2, True),
    Metric("shift_translation_acc", "accuracy under translation (edge-filled borders)", 100.0, " points", 2, False),
    Metric("translation_zero_fill_advantage", "advantage of black over edge-filled borders under translation", 100.0, " points", 2, False),
    Metric("shift_rotation_acc", "accuracy under rotation", 100.0, " points", 2, False),
    Metric("shift_scale_acc", "accuracy under scaling", 100.0, " points", 2, False),
    Metric("ece", "expected calibration error", 1.0, "", 3, True),
    Metric("confident_errors_0.9", "confident failures (confidence ≥ 0.9)", 1.0, " images", 2, True),
)
# The headline table and the per-seed table show these; observations test every HEADLINE_METRICS entry.
HEADLINE_TABLE = ("test_acc", "mean_corruption_acc", "corruption_drop", "shift_translation_acc", "ece", "confident_errors_0.9")
HOLM_ALPHA = 0.05  # family-wise error rate over the headline metrics
# Every scalar the sweep aggregates, in table order (see stress.analyses.seeds.seed_metrics).
ALL_METRICS = ("test_acc", "clean_acc", "mean_corruption_acc", "mean_corruption_acc_main", "corruption_drop",
               "shift_translation_acc", "shift_translation_zerofill_acc", "translation_zero_fill_advantage", "shift_flip_acc",
               "shift_rotation_acc", "shift_scale_acc", "ece", "ece_after_temperature", "errors",
               "confident_errors_0.9", "confident_errors_0.99", "road_combined_gain")


def _per_seed_values(summary: dict, variant: str, key: str) -> list[float] | None:
    values = [summary["per_seed"][str(s)][variant].get(key) for s in summary["seeds"]]
    return None if any(x is None for x in values) else [float(x) for x in values]


def _corruption_list(names: list[str] | None) -> str:
    """The config's corruption list; an empty list means every implemented corruption."""
    if names is None:
        return MISSING
    return ", ".join(names) if names else "all implemented"


def _value_text(value) -> str:
    # Counts (errors, confident errors) are integers in each seed's summary: print them as such.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else number(value)


def _p_text(p: float | None) -> str:
    return "p n/a" if p is None else ("p<0.001" if p < 0.001 else f"p={p:.3f}")


def _range_text(low: float | None, high: float | None, scale: float, digits: int) -> str:
    return "no interval" if low is None or high is None else f"{low * scale:+.{digits}f}..{high * scale:+.{digits}f}"


def _mean_cell(entry: dict | None) -> str:
    return MISSING if not entry else f"{number(entry['mean'])} {interval_text(entry['low'], entry['high'], sign=False)}"


def _paired_cell(entry: dict | None) -> str:
    return MISSING if not entry else f"{signed(entry['mean'])} {interval_text(entry['low'], entry['high'])}, {_p_text(entry.get('p'))}"


def headline_holm(aggregate: dict) -> dict[str, bool]:
    """{metric key: significant after Holm} over every headline metric these seeds measured (the family of paired_effects)."""
    keys = [m.key for m in HEADLINE_METRICS if aggregate["paired"].get(m.key)]
    pvalues = [aggregate["paired"][k]["p"] if aggregate["paired"][k].get("p") is not None else 1.0 for k in keys]
    return dict(zip(keys, holm_bonferroni(pvalues, HOLM_ALPHA) if keys else []))


def headline_metrics(summary: dict) -> list[Metric]:
    """The headline table's metrics that these seeds measured (a seed run lacks a metric when its stage did not run)."""
    chosen = [m for m in HEADLINE_METRICS if m.key in HEADLINE_TABLE]
    aggregate = summary.get("aggregate")
    if aggregate:
        return [m for m in chosen if m.key in aggregate["paired"]]
    return [m for m in chosen if all(_per_seed_values(summary, v, m.key) is not None for v in VARIANTS)]


def headline(summary: dict) -> Section:
    """Per variant: mean [95% CI] over seeds of the headline metrics, and the paired augmented − baseline difference."""
    aggregate, seeds = summary.get("aggregate"), summary["seeds"]
    metrics = headline_metrics(summary)
    headers = ("", *(m.label for m in metrics))
    blocks: list = []
    if aggregate:
        rows = [(v, *(_mean_cell(aggregate["variants"][v].get(m.key)) for m in metrics)) for v in VARIANTS]
        rows.append(("augmented − baseline", *(_paired_cell(aggregate["paired"].get(m.key)) for m in metrics)))
        holm = headline_holm(aggregate)
        rows.append((f"significant after Holm over {len(holm)} metrics", *("yes" if holm.get(m.key) else "no" for m in metrics)))
        blocks.append(Paragraph(f"Mean over {aggregate['n_seeds']} seeds [95% t-interval over seeds]; then the paired difference "
                                "(augmented − baseline, same seed) with its unadjusted 95% interval over seeds and paired t-test p, "
                                f"and whether p survives Holm's correction over the {len(holm)} headline metrics measured (those "
                                "in the observations, a superset of these columns). These intervals contain the variation between "
                                "trainings, so they are the ones that speak about the augmentation itself."))
        blocks.append(make_table(headers, rows))
    else:
        values = {v: [_per_seed_values(summary, v, m.key) for m in metrics] for v in VARIANTS}
        rows = [(v, *(MISSING if x is None else f"{number(x[0])} (no interval)" for x in values[v])) for v in VARIANTS]
        rows.append(("augmented − baseline", *(MISSING if a is None or b is None else f"{signed(b[0] - a[0])} (no interval)"
                                               for a, b in zip(values["baseline"], values["augmented"]))))
        blocks.append(make_table(headers, rows))
        blocks.append(Note(f"aggregate is null in summary.json: a single seed ({seeds[0]}) cannot give an interval"))
    absent = [m.label for m in HEADLINE_METRICS if m.key in HEADLINE_TABLE and m not in metrics]
    if absent:
        blocks.append(Note(f"not measured in these seeds (a stage did not run): {', '.join(absent)}"))
    return Section("headline", "Headline", tuple(blocks))


def setup(summary: dict, config: dict, manifest: dict, source: str, trained: dict | None = None,
          stages: dict[str, list[str]] | None = None) -> Section:
    """Seeds, data, and the model/training settings of the first seed's run folder; `trained` and `stages`: what every
    seed's trainers and analysis stages ran in (setup_text.seeds_precision)."""
    dataset, model, train, stress = summary.get("dataset", {}), config.get("model", {}), config.get("train", {}), config.get("stress", {})
    rows = [
        ("sweep", summary.get("run", {}).get("name", MISSING)),
        ("seeds", f"{', '.join(str(s) for s in summary['seeds'])} ({len(summary['seeds'])} in all)"),
        ("data source", dataset.get("source", MISSING)),
        ("split sizes (train / validation / test)", f"{dataset.get('train', MISSING)} / {dataset.get('val', MISSING)} / {dataset.get('test', MISSING)}"),
        ("data sha256", dataset.get("sha256", MISSING)),
    ]
    blocks: list = []
    if config:
        rows += [
            ("model", model_text(model)),
            ("optimiser", f"lr {train.get('lr', MISSING)}, weight decay {train.get('weight_decay', MISSING)}"),
            ("batch size / epochs", f"{train.get('batch_size', MISSING)} / {train.get('epochs', MISSING)}"),
            ("precision", precision_text(train, manifest or {}, trained, stages)),
            ("torch.compile", compile_text(manifest or {})),
            ("augmentation (augmented variant)",
             f"RandomCrop(padding {train.get('crop_padding', MISSING)}) + horizontal flip p={train.get('flip_probability', MISSING)}"),
            ("corruptions / severities", f"{_corruption_list(stress.get('corruptions'))} / {stress.get('severities', MISSING)}"),
        ]
    if manifest:
        rows += [
            ("versions", ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items()) or MISSING),
            ("git commit", commit_text(manifest)),
            ("hardware", hardware_text(manifest.get("hardware", {}))),
        ]
    blocks.append(make_table(("item", "value"), rows))
    blocks.append(Paragraph(f"Model and training settings from {source}/config.json and manifest.json; every seed uses the same settings."))
    if not config or not manifest:
        blocks.append(Note(f"{source}/{'config.json' if not config else 'manifest.json'} not found: its settings are not shown"))
    return Section("setup", "Setup", tuple(blocks))


def seed_statistics(summary: dict) -> Section:
    """Per-seed table and figure; all paired differences; per-corruption gains with Holm."""
    seeds, aggregate = summary["seeds"], summary.get("aggregate")
    keys = [k for k in ALL_METRICS if any(summary["per_seed"][str(s)][v].get(k) is not None for s in seeds for v in VARIANTS)]
    # The per-seed table keeps to the headline metrics (a table of every metric does not fit a page);
    # every metric is in the aggregate table below and in summary.json.
    per_seed_keys = [k for k in keys if k in HEADLINE_TABLE]
    rows = [(s, v, *(_value_text(summary["per_seed"][str(s)][v].get(k)) for k in per_seed_keys)) for s in seeds for v in VARIANTS]
    blocks: list = [make_table(("seed", "variant", *(k.replace("_", " ") for k in per_seed_keys)), rows),
                    Figure(sweep_figure("seed_metrics"), "Per-seed values of the headline metrics (grey lines join the two models of "
                                                         "one seed), with the mean and 95% CI over seeds.")]
    if not aggregate:
        blocks.append(Note("aggregate is null in summary.json: a single seed cannot give an interval"))
        return Section("seed-statistics", "Seed statistics", tuple(blocks))
    paired = aggregate["paired"]
    blocks.append(make_table(("metric", "baseline [95% CI over seeds]", "augmented [95% CI over seeds]",
                          "augmented − baseline [95% CI over seeds], p", "seeds"), [
        (k.replace("_", " "), _mean_cell(aggregate["variants"]["baseline"].get(k)), _mean_cell(aggregate["variants"]["augmented"].get(k)),
         _paired_cell(paired[k]), paired[k]["n"]) for k in keys if k in paired]))
    gains = paired.get("by_corruption")
    if not gains:
        blocks.append(Note("no per-corruption results in these seeds (stage stress did not run)"))
        return Section("seed-statistics", "Seed statistics", tuple(blocks))
    by_variant = {v: aggregate["variants"][v].get("by_corruption", {}) for v in VARIANTS}
    blocks.append(Paragraph(f"Per-corruption accuracy (mean over severities) and the paired gain; Holm correction over "
                            f"{len(gains)} corruptions at family-wise α={aggregate.get('holm_alpha')}."))
    blocks.append(make_table(("corruption", "baseline [95% CI over seeds]", "augmented [95% CI over seeds]", "gain [95% CI over seeds], p",
                          "significant after Holm"), [
        (c, _mean_cell(by_variant["baseline"].get(c)), _mean_cell(by_variant["augmented"].get(c)), _paired_cell(g),
         "yes" if g.get("significant_holm") else "no") for c, g in gains.items()]))
    blocks.append(Figure(sweep_figure("corruption_gain"), "Augmented − baseline accuracy per corruption, paired by seed (95% CI); "
                                                          "* where significant after Holm: green higher, red lower with augmentation."))
    return Section("seed-statistics", "Seed statistics", tuple(blocks))


def failure_stability(summary: dict) -> Section:
    """Which test images fail in every seed (data-intrinsic candidates) and which only in some (seed-dependent)."""
    stability = summary.get("stability")
    if not stability:
        return Section("stability", "Failure stability", (Note("stability is not in summary.json: failure stability was not computed"),))
    n = stability["n_seeds"]
    rows = []
    for v in VARIANTS:
        s = stability["variants"][v]
        share = MISSING if not s["ever_wrong"] else number(s["always_wrong"] / s["ever_wrong"])
        rows.append((v, s["always_wrong"], s["once_wrong"], s["ever_wrong"] - s["always_wrong"], s["ever_wrong"], share))
    overlap = stability.get("overlap", {})
    blocks: list = [
        Paragraph(f"Each test image is counted by the number of the {n} seeds whose model misclassifies it."),
        make_table(("variant", f"always wrong ({n} of {n})", "wrong in exactly 1", "seed-dependent (1 to n−1)", "ever wrong",
                "always / ever"), rows),
        make_table(("always wrong under both variants", "Jaccard of always-wrong sets", "Jaccard of ever-wrong sets"),
               [(overlap.get("always_wrong_both", MISSING), number(overlap.get("always_wrong_jaccard")), number(overlap.get("ever_wrong_jaccard")))]),
        Figure(sweep_figure("fail_counts"), f"Number of test images misclassified in k of {n} seeds, per variant."),
    ]
    if n < 2:
        blocks.append(Note("a single seed cannot separate data-intrinsic from seed-dependent failures: no gallery"))
        return Section("stability", "Failure stability", tuple(blocks))
    for v in VARIANTS:
        always = stability["variants"][v]["always_wrong"]
        if always:
            blocks.append(Figure(sweep_figure("always_wrong", v), (
                f"{v}: images misclassified by every seed's model, the first by test index ({always} in all), with index and "
                "true class. These are data-intrinsic candidates (hard, ambiguous or possibly mislabelled), not proven label errors.")))
        else:
            blocks.append(Note(f"{v}: no test image is misclassified by all {n} seeds"))
    return Section("stability", "Failure stability", tuple(blocks))


def seed_reports(summary: dict, run: RunFolder) -> Section:
    """Relative links to each seed's own report.html (only those that exist)."""
    present = [s for s in summary["seeds"] if run.path(f"seed_{s}", "report.html").is_file()]
    blocks: list = []
    if present:
        blocks.append(Links(tuple((f"seed {s}", f"seed_{s}/report.html") for s in present)))
    absent = [str(s) for s in summary["seeds"] if s not in present]
    if absent:
        blocks.append(Note(f"no report.html for seed(s) {', '.join(absent)}"))
    return Section("seed-reports", "Per-seed reports", tuple(blocks))


# -- observations -----------------------------------------------------------------
def single_seed(summary: dict) -> list[Observation]:
    if summary.get("aggregate"):
        return []
    return [Observation(
        rule="single_seed", text=(f"Only seed {summary['seeds'][0]} was run: a single seed cannot give an interval, so no effect "
                                  "of augmentation is claimed; run at least 2 seeds."),
        verdict=INCONCLUSIVE, uncertainty="n=1: no spread over seeds", evidence={"n_seeds": len(summary["seeds"])})]


def paired_effects(summary: dict) -> list[Observation]:
    """For each headline metric: did augmentation change it, across seeds? Paired t-interval over
    seeds; an effect needs the interval to exclude 0 and the paired t-test to survive Holm's
    correction over the headline metrics that were measured."""
    aggregate = summary.get("aggregate")
    if not aggregate:
        return []
    measured = [(m, aggregate["paired"][m.key]) for m in HEADLINE_METRICS if aggregate["paired"].get(m.key)]
    rejected = headline_holm(aggregate)
    out = []
    for m, g in measured:
        significant = rejected[m.key]
        worse, better = (" (worse)", " (better)") if m.lower_is_better else ("", "")
        verdict = verdict_of(g["low"], g["high"]) if significant else INCONCLUSIVE
        if verdict == EFFECT:
            reading = direction(g["low"], g["high"], f"augmentation raised {m.label}{worse}.", f"augmentation lowered {m.label}{better}.")
        elif verdict_of(g["low"], g["high"]) == EFFECT:
            reading = f"the interval excludes 0, but not after Holm's correction over {len(measured)} metrics: inconclusive."
        else:
            reading = "the 95% interval includes 0, so the direction is inconclusive."
        text = (f"Across {g['n']} seeds, augmentation changed {m.label} by {g['mean'] * m.scale:+.{m.digits}f}{m.unit} "
                f"(95% CI over seeds {_range_text(g['low'], g['high'], m.scale, m.digits)}, paired t-test {_p_text(g.get('p'))}, "
                f"n={g['n']}): " + reading)
        out.append(Observation(
            rule="paired_effect", text=text, verdict=verdict, scope=INTERVENTION,
            uncertainty=f"paired 95% t-interval over {g['n']} seeds; Holm over {len(measured)} headline metrics at α={HOLM_ALPHA}",
            figure=sweep_figure("seed_metrics"),
            evidence={"metric": m.key, "mean": g["mean"], "low": g["low"], "high": g["high"], "p": g.get("p"), "n": g["n"],
                      "significant_holm": bool(significant)}))
    return out


def significant_corruptions(summary: dict) -> list[Observation]:
    """Which corruptions' paired gains survive the Holm correction?"""
    aggregate = summary.get("aggregate")
    gains = (aggregate or {}).get("paired", {}).get("by_corruption")
    if not gains:
        return []
    alpha, n = aggregate.get("holm_alpha"), aggregate["n_seeds"]
    significant = [c for c, g in gains.items() if g.get("significant_holm")]
    lead = f"After Holm correction over {len(gains)} corruptions (family-wise α={alpha}, {n} seeds), "
    if significant:
        listing = "; ".join(f"{c} {gains[c]['mean'] * 100:+.2f} points (95% CI {_range_text(gains[c]['low'], gains[c]['high'], 100, 2)}, "
                            f"{_p_text(gains[c].get('p'))})" for c in significant)
        text = lead + f"augmentation changed accuracy significantly under: {listing}."
    else:
        text = lead + "the corruptions with a significant change of accuracy are: none."
    return [Observation(
        rule="significant_corruptions", text=text, verdict=EFFECT if significant else INCONCLUSIVE, scope=INTERVENTION,
        uncertainty=f"paired t-tests over {n} seeds, Holm step-down at α={alpha}", figure=sweep_figure("corruption_gain"),
        evidence={"significant": len(significant), "corruptions": len(gains)})]


def error_stability(summary: dict) -> list[Observation]:
    """Per variant: the share of errors that are data-intrinsic (wrong in every seed) versus seed-dependent."""
    stability = summary.get("stability")
    if not stability:
        return []
    n = stability["n_seeds"]
    out = []
    for v in VARIANTS:
        s = stability["variants"][v]
        always, ever, once = s["always_wrong"], s["ever_wrong"], s["once_wrong"]
        if n < 2:
            text, verdict = (f"For {v}, a single seed cannot give an interval nor separate data-intrinsic from seed-dependent "
                             f"errors: its {ever} errors are all from one model."), INCONCLUSIVE
            uncertainty, evidence = "n=1", {"ever_wrong": ever}
        elif not ever:
            text, verdict, uncertainty, evidence = f"For {v}, no test image is misclassified by any of the {n} seeds.", NO_EFFECT, "counts", {}
        else:
            low, high = wilson_interval(always, ever)
            text = (f"For {v}, {ever} test images are misclassified by at least one of {n} seeds; {always} of them "
                    f"({100 * always / ever:.1f}%) fail in every seed (data-intrinsic candidates) and {ever - always} "
                    f"({100 * (ever - always) / ever:.1f}%) only in some (seed-dependent; {once} in exactly one).")
            verdict = EFFECT if always else NO_EFFECT
            uncertainty = (f"always-wrong share Wilson 95% CI {interval_text(low, high, sign=False)} over the {ever} ever-wrong images; "
                           "the always-wrong set can only shrink with more seeds")
            evidence = {"always_wrong": always, "ever_wrong": ever, "once_wrong": once, "share_low": low, "share_high": high}
        out.append(Observation(rule="error_stability", text=text, verdict=verdict, uncertainty=uncertainty,
                               figure=sweep_figure("fail_counts"), evidence=evidence))
    return out


def shared_intrinsic(summary: dict) -> list[Observation]:
    """Do both variants fail on the same images in every seed?"""
    stability = summary.get("stability")
    if not stability or stability["n_seeds"] < 2 or not stability.get("overlap"):
        return []
    o = stability["overlap"]
    both = o["always_wrong_both"]
    text = (f"{both} test images are misclassified in all {stability['n_seeds']} seeds by both variants; Jaccard index of the "
            f"two always-wrong sets {number(o['always_wrong_jaccard'])}, of the ever-wrong sets {number(o['ever_wrong_jaccard'])}.")
    return [Observation(rule="shared_intrinsic", text=text, verdict=EFFECT if both else NO_EFFECT,
                        uncertainty="counts over the test images; no interval",
                        figure=sweep_figure("always_wrong", VARIANTS[0]) if stability["variants"][VARIANTS[0]]["always_wrong"] else None,
                        evidence={"always_wrong_both": both, "always_wrong_jaccard": o["always_wrong_jaccard"]})]


SWEEP_NOTE = ("Generated from the numbers above. Statements about the augmentation rest on intervals over seeds (independent "
              "trainings of both models, paired by seed), with Holm's correction over the headline metrics and over the corruptions.")
SWEEP_RULES = (single_seed, paired_effects, significant_corruptions, error_stability, shared_intrinsic, slice_findings,
               fourier_shift_over_seeds, probes_shift_over_seeds)


def compose_sweep(summary: dict, run: RunFolder) -> list[Section]:
    """All sections of the sweep report in order; `summary` is the sweep folder's summary.json."""
    check_sweep_summary(summary, run.path("summary.json"))
    source = f"seed_{summary['seeds'][0]}"
    config_path, manifest_path = run.path(source, "config.json"), run.path(source, "manifest.json")
    config = read_json(config_path) if config_path.is_file() else {}
    manifest = read_json(manifest_path) if manifest_path.is_file() else {}
    extra = [s for s in (fourier_over_seeds_section(summary), probes_over_seeds_section(summary)) if s]
    return [headline(summary), setup(summary, config, manifest, source, *seeds_precision(run, summary["seeds"])),
            seed_statistics(summary), failure_stability(summary),
            labels_over_seeds(summary), *extra, seed_reports(summary, run),
            observations(summary, SWEEP_RULES, SWEEP_NOTE)]
