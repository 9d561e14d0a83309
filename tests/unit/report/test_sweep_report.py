"""The seed-sweep report: sections, embedded figures, headline numbers, observation verdicts, n=1, errors."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stress.analyses.seeds import failure_stability
from stress.artifacts import RunFolder
from stress.constants import VARIANTS
from stress.errors import StressError
from stress.report.build import build_report
from stress.report.statements import EFFECT, INCONCLUSIVE, NO_EFFECT
from stress.report.sweep_figures import write_sweep_figures
from stress.report.sweep_report import HEADLINE_METRICS, HEADLINE_TABLE, error_stability, paired_effects, significant_corruptions, single_seed

ROOT = Path(__file__).resolve().parents[3]
FIXTURE = ROOT / "tests" / "fixtures" / "sweep_small"
SECTIONS = ["headline", "setup", "seed-statistics", "stability", "labels", "seed-reports", "observations"]
QUIET = lambda message: None  # noqa: E731


@pytest.fixture(scope="module")
def drawn_sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("drawn") / "sweep_small"
    shutil.copytree(FIXTURE, root)
    written = write_sweep_figures(RunFolder(root), QUIET)
    assert sorted(p.name for p in written) == sorted(["sweep_seed_metrics.png", "sweep_corruption_gain.png", "sweep_fail_counts.png",
                                                      "sweep_always_wrong_baseline.png", "sweep_always_wrong_augmented.png"])
    return root


@pytest.fixture
def sweep(drawn_sweep, tmp_path) -> Path:
    root = tmp_path / "sweep"
    shutil.copytree(drawn_sweep, root)
    return root


def summary_of(root: Path) -> dict:
    return json.loads((root / "summary.json").read_text())


def section_ids(page: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', page)


def section(page: str, anchor: str) -> str:
    return page.split(f'<section id="{anchor}">')[1].split("</section>")[0]


def table_rows(html_part: str, index: int = 0) -> dict[str, list[str]]:
    table = html_part.split("<table>")[index + 1].split("</table>")[0]
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table)]
    return {row[0]: row[1:] for row in cells if row}


def observation_rows(page: str) -> list[tuple[str, str]]:
    """(verdict, sentence) of every row of the observations table."""
    rows = re.findall(r"<tr>(.*?)</tr>", section(page, "observations"))
    return [(cells[0], cells[1]) for cells in (re.findall(r"<td>(.*?)</td>", row) for row in rows) if cells]


def test_sections_in_order_and_figures_are_png(sweep):
    html_path, md_path = build_report(sweep)
    page = html_path.read_text()
    assert section_ids(page) == SECTIONS
    assert "Seed-sweep report: sw1" in page and "<script src" not in page and "http" not in page
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 5
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        assert image.format == "PNG" and image.size[0] > 100
        image.verify()
    assert "was not drawn" not in page
    ids, links = set(re.findall(r' id="([^"]+)"', page)), re.findall(r'href="#([^"]+)"', page)
    assert "fig-sweep_fail_counts" in links and set(links) <= ids  # nav and observation figure links resolve
    markdown = md_path.read_text()
    headings = [markdown.index(f"## {title}") for title in ("Headline", "Setup", "Seed statistics", "Failure stability",
                                                            "Per-seed reports", "Observations")]
    assert headings == sorted(headings)
    assert "](figures/sweep_always_wrong_augmented.png)" in markdown


def test_headline_numbers_equal_the_summary(sweep):
    page = build_report(sweep)[0].read_text()
    rows = table_rows(section(page, "headline"))
    aggregate = summary_of(sweep)["aggregate"]
    metrics = [m for m in HEADLINE_METRICS if m.key in HEADLINE_TABLE and m.key in aggregate["paired"]]
    assert len(metrics) >= 4
    for v in VARIANTS:
        for cell, metric in zip(rows[v], metrics, strict=True):
            e = aggregate["variants"][v][metric.key]
            assert cell == f"{e['mean']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"
    for cell, metric in zip(rows["augmented − baseline"], metrics, strict=True):
        e = aggregate["paired"][metric.key]
        assert cell == f"{e['mean']:+.3f} [{e['low']:+.3f}, {e['high']:+.3f}], p={e['p']:.3f}"
    # The Holm row: a step-down by hand over every headline metric measured (not only the table's columns).
    family = {m.key: aggregate["paired"][m.key]["p"] for m in HEADLINE_METRICS if aggregate["paired"].get(m.key)}
    order, rejected, going = sorted(family, key=family.get), set(), True
    for rank, key in enumerate(order):
        going = going and family[key] <= 0.05 / (len(order) - rank)
        if going:
            rejected.add(key)
    assert rows[f"significant after Holm over {len(family)} metrics"] == ["yes" if m.key in rejected else "no" for m in metrics]
    # The fixture predates the drop and the shift families: the note names exactly what is absent.
    absent = [m.label for m in HEADLINE_METRICS if m.key in HEADLINE_TABLE and m not in metrics]
    assert (f"not measured in these seeds (a stage did not run): {', '.join(absent)}" in section(page, "headline")) == bool(absent)


def test_stability_table_and_observations_match_the_wrong_flags(sweep):
    page = build_report(sweep)[0].read_text()
    rows = table_rows(section(page, "stability"))
    with np.load(sweep / "stability.npz") as table:
        wrong = {v: table[f"{v}_wrong"] for v in VARIANTS}  # (n_seeds, n_images) bool
    observed = [text for _, text in observation_rows(page)]
    for v in VARIANTS:
        counts = wrong[v].sum(0)  # per image: in how many seeds it is wrong
        always, once, ever = int((counts == 2).sum()), int((counts == 1).sum()), int((counts > 0).sum())
        assert rows[v] == [str(always), str(once), str(ever - always), str(ever), f"{always / ever:.3f}"]
        sentence = next(t for t in observed if t.startswith(f"For {v}, {ever} test images"))
        assert f"{always} of them ({100 * always / ever:.1f}%) fail in every seed" in sentence
    both = int(((wrong["baseline"].sum(0) == 2) & (wrong["augmented"].sum(0) == 2)).sum())
    assert table_rows(section(page, "stability"), 1)[str(both)][0] == f"{summary_of(sweep)['stability']['overlap']['always_wrong_jaccard']:.3f}"


def hand_summary(paired: dict, by_corruption: dict | None = None) -> dict:
    """A minimal 3-seed sweep summary around a hand-built `aggregate.paired` block."""
    seeds = [1, 2, 3]
    entry = {"test_acc": 0.5}
    return {"kind": "sweep", "seeds": seeds, "per_seed": {str(s): {v: dict(entry) for v in VARIANTS} for s in seeds},
            "aggregate": {"n_seeds": 3, "variants": {v: {} for v in VARIANTS},
                          "paired": {**paired, **({"by_corruption": by_corruption} if by_corruption else {})}, "holm_alpha": 0.05},
            "stability": None}


def test_paired_verdicts_follow_the_interval():
    found = paired_effects(hand_summary({
        "test_acc": {"mean": 0.02, "low": 0.01, "high": 0.03, "p": 0.01, "n": 3},  # excludes 0: effect, raised
        "mean_corruption_acc": {"mean": 0.01, "low": -0.01, "high": 0.03, "p": 0.2, "n": 3},  # straddles 0
        "ece": {"mean": -0.05, "low": -0.08, "high": -0.02, "p": 0.0004, "n": 3},  # excludes 0 below: lower is better
        "confident_errors_0.9": {"mean": 1.0, "low": None, "high": None, "p": None, "n": 3},  # no interval
    }))
    by_metric = {o.evidence["metric"]: o for o in found}
    assert by_metric["test_acc"].verdict == EFFECT
    assert ("Across 3 seeds, augmentation changed test accuracy by +2.00 points (95% CI over seeds +1.00..+3.00, paired t-test "
            "p=0.010, n=3): augmentation raised test accuracy.") == by_metric["test_acc"].text
    assert by_metric["test_acc"].evidence["significant_holm"] and "Holm over 4 headline metrics" in by_metric["test_acc"].uncertainty
    assert by_metric["mean_corruption_acc"].verdict == INCONCLUSIVE
    assert "(95% CI over seeds -1.00..+3.00, paired t-test p=0.200, n=3)" in by_metric["mean_corruption_acc"].text
    assert "includes 0" in by_metric["mean_corruption_acc"].text and "raised" not in by_metric["mean_corruption_acc"].text
    assert by_metric["ece"].verdict == EFFECT
    assert "by -0.050 (95% CI over seeds -0.080..-0.020, paired t-test p<0.001, n=3): augmentation lowered expected calibration " \
        "error (better)." in by_metric["ece"].text
    assert by_metric["confident_errors_0.9"].verdict == INCONCLUSIVE and "no interval" in by_metric["confident_errors_0.9"].text


def test_paired_effects_need_holm_over_the_headline_metrics():
    # p = 0.03 alone would pass at 0.05, but Holm over 2 metrics tests the smaller p at 0.025 first.
    found = paired_effects(hand_summary({
        "test_acc": {"mean": 0.02, "low": 0.001, "high": 0.039, "p": 0.03, "n": 5},
        "mean_corruption_acc": {"mean": 0.02, "low": 0.0005, "high": 0.0395, "p": 0.04, "n": 5},
    }))
    assert [o.verdict for o in found] == [INCONCLUSIVE, INCONCLUSIVE]
    assert all("not after Holm's correction over 2 metrics" in o.text for o in found)
    [found, _] = paired_effects(hand_summary({
        "test_acc": {"mean": 0.02, "low": 0.01, "high": 0.03, "p": 0.02, "n": 5},
        "mean_corruption_acc": {"mean": 0.02, "low": 0.0005, "high": 0.0395, "p": 0.04, "n": 5},
    }))
    assert found.verdict == EFFECT  # 0.02 <= 0.05 / 2, then 0.04 <= 0.05 / 1: both rejected


def test_holm_significant_corruptions_are_listed_or_none():
    gains = {"fog": {"mean": 0.03, "low": 0.02, "high": 0.04, "p": 0.001, "n": 3, "significant_holm": True},
             "gaussian_noise": {"mean": 0.01, "low": -0.02, "high": 0.04, "p": 0.3, "n": 3, "significant_holm": False}}
    [found] = significant_corruptions(hand_summary({}, gains))
    assert found.verdict == EFFECT
    assert "over 2 corruptions" in found.text and "fog +3.00 points (95% CI +2.00..+4.00, p=0.001)" in found.text
    assert "gaussian_noise" not in found.text
    gains["fog"]["significant_holm"] = False
    [found] = significant_corruptions(hand_summary({}, gains))
    assert found.verdict == INCONCLUSIVE and found.text.endswith(": none.")


def test_stability_verdicts():
    wrong = np.array([[1, 1, 0, 1, 0], [1, 0, 0, 1, 1], [1, 0, 0, 1, 0]], dtype=bool)  # 2 always, 2 once, 4 ever
    summary = {"stability": failure_stability({v: wrong for v in VARIANTS})}
    found = error_stability(summary)
    assert [o.verdict for o in found] == [EFFECT, EFFECT]
    assert "4 test images are misclassified by at least one of 3 seeds; 2 of them (50.0%) fail in every seed" in found[0].text
    assert "2 (50.0%) only in some (seed-dependent; 2 in exactly one)" in found[0].text
    summary = {"stability": failure_stability({v: np.zeros((3, 5), bool) for v in VARIANTS})}
    assert [o.verdict for o in error_stability(summary)] == [NO_EFFECT, NO_EFFECT]
    summary = {"stability": failure_stability({v: wrong[:1] for v in VARIANTS})}
    [first, _] = error_stability(summary)
    assert first.verdict == INCONCLUSIVE and "a single seed cannot give an interval" in first.text


def single_seed_sweep(root: Path) -> None:
    """Rewrite the sweep folder as a one-seed sweep, as stress.sweep writes it (aggregate null)."""
    summary = summary_of(root)
    with np.load(root / "stability.npz") as table:
        wrong = {v: table[f"{v}_wrong"][:1] for v in VARIANTS}
    summary.update(seeds=[42], per_seed={"42": summary["per_seed"]["42"]}, aggregate=None, stability=failure_stability(wrong))
    (root / "summary.json").write_text(json.dumps(summary))
    shutil.rmtree(root / "figures")


def test_single_seed(sweep):
    single_seed_sweep(sweep)
    names = sorted(p.name for p in write_sweep_figures(RunFolder(sweep), QUIET))
    assert names == ["sweep_fail_counts.png", "sweep_seed_metrics.png"]  # no gain figure (no interval), no gallery (one seed)
    page = build_report(sweep)[0].read_text()
    assert section_ids(page) == SECTIONS and "was not drawn" not in page
    rows = table_rows(section(page, "headline"))
    per_seed = summary_of(sweep)["per_seed"]["42"]
    assert rows["baseline"][0] == f"{per_seed['baseline']['test_acc']:.3f} (no interval)"
    assert rows["augmented − baseline"][0] == f"{per_seed['augmented']['test_acc'] - per_seed['baseline']['test_acc']:+.3f} (no interval)"
    assert "a single seed (42) cannot give an interval" in section(page, "headline")
    assert "a single seed cannot give an interval" in section(page, "seed-statistics")
    verdicts = observation_rows(page)
    assert verdicts and all(verdict == INCONCLUSIVE for verdict, _ in verdicts)
    assert any("a single seed cannot give an interval, so no effect" in text for _, text in verdicts)
    assert single_seed(summary_of(sweep))[0].verdict == INCONCLUSIVE


def test_missing_blocks_give_notes(sweep):
    summary = summary_of(sweep)
    summary["stability"] = None
    for v in VARIANTS:
        for s in summary["per_seed"].values():
            del s[v]["mean_corruption_acc"]
        del summary["aggregate"]["variants"][v]["mean_corruption_acc"]
    del summary["aggregate"]["paired"]["mean_corruption_acc"], summary["aggregate"]["paired"]["by_corruption"]
    (sweep / "summary.json").write_text(json.dumps(summary))
    (sweep / "seed_42" / "config.json").unlink()
    page = build_report(sweep)[0].read_text()
    assert section_ids(page) == SECTIONS
    assert "<img" not in section(page, "stability") and "failure stability was not computed" in section(page, "stability")
    headline = section(page, "headline")
    header = headline.split("<table>")[1].split("</tr>")[0]
    assert "test accuracy" in header and "mean corruption accuracy" not in header and "not measured" in headline
    assert "mean corruption accuracy" in headline.split("not measured")[1]
    assert "stage stress did not run" in section(page, "seed-statistics")
    assert "seed_42/config.json not found" in section(page, "setup")
    assert not [t for _, t in observation_rows(page) if "corruption" in t]


def test_seed_reports_are_linked_only_when_present(sweep):
    (sweep / "seed_42" / "report.html").write_text("<html></html>")
    html_path, md_path = build_report(sweep)
    part = section(html_path.read_text(), "seed-reports")
    assert re.findall(r'<a href="([^"]+)">', part) == ["seed_42/report.html"]
    assert "no report.html for seed(s) 43" in part
    assert "- [seed 42](seed_42/report.html)" in md_path.read_text()


@pytest.mark.parametrize("content, message", [
    ("{ not json", r"summary\.json: corrupt JSON"),
    ("[1, 2]", r"summary\.json: not a valid (run|sweep) summary"),
    ('{"kind": "sweep", "seeds": "42"}', r"summary\.json: not a valid sweep summary \('seeds'"),
    ('{"kind": "sweep", "seeds": [42], "per_seed": {"42": {"baseline": {}}}}', r"summary\.json: not a valid sweep summary"),
])
def test_broken_summary_is_a_one_line_error(sweep, content, message):
    (sweep / "summary.json").write_text(content)
    for action in (lambda: build_report(sweep), lambda: write_sweep_figures(RunFolder(sweep), QUIET)):
        with pytest.raises(StressError, match=message) as caught:
            action()
        assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_rebuilding_gives_the_same_bytes_and_the_job_works(sweep):
    assert build_report(sweep)[0].read_bytes() == build_report(sweep)[0].read_bytes()
    done = subprocess.run([sys.executable, str(ROOT / "jobs" / "report.py"), "--no-figures", str(sweep)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert section_ids((sweep / "report.html").read_text()) == SECTIONS


def test_setup_names_the_corruptions_and_says_all_for_an_empty_list(sweep):
    rows = table_rows(section(build_report(sweep)[0].read_text(), "setup"))
    assert rows["corruptions / severities"][0].startswith("gaussian_noise, fog / ")
    config_path = sweep / "seed_42" / "config.json"
    config = json.loads(config_path.read_text())
    config["stress"]["corruptions"] = []  # the default: every implemented corruption
    config_path.write_text(json.dumps(config))
    rows = table_rows(section(build_report(sweep)[0].read_text(), "setup"))
    assert rows["corruptions / severities"][0].startswith("all implemented / ")


def test_setup_says_which_precision_the_seeds_were_trained_in(sweep):
    config_path = sweep / "seed_42" / "config.json"
    config = json.loads(config_path.read_text())
    config["train"]["precision"] = "bf16"
    config_path.write_text(json.dumps(config))
    rows = table_rows(section(build_report(sweep)[0].read_text(), "setup"))
    assert rows["precision"][0].startswith("bf16")
    config["train"].pop("precision")  # a sweep from before the option: fp32
    config_path.write_text(json.dumps(config))
    assert table_rows(section(build_report(sweep)[0].read_text(), "setup"))["precision"][0].startswith("fp32")


def test_setup_says_what_the_seeds_trainers_ran_in_on_their_devices(sweep):
    manifest_path = sweep / "seed_42" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["precision"] = {"requested": "auto", "resolved": {"cpu": "fp32"}, "cpu_fast_bf16": False}
    manifest_path.write_text(json.dumps(manifest))
    seeds = json.loads((sweep / "summary.json").read_text())["seeds"]
    for i, seed in enumerate(seeds):  # the last seed's trials landed on a CPU node, the others on GPUs
        trained = {"precision": "fp32", "device": "cpu"} if i == len(seeds) - 1 else {"precision": "bf16", "device": "cuda"}
        (sweep / f"seed_{seed}").mkdir(exist_ok=True)
        (sweep / f"seed_{seed}" / "summary.json").write_text(json.dumps({"variants": {v: trained for v in ("baseline", "augmented")}}))
    row = table_rows(section(build_report(sweep)[0].read_text(), "setup"))["precision"][0]
    assert row == "auto (the driver resolves it to fp32 on cpu); training ran in bf16 on cuda and fp32 on cpu"
    # The analysis stages of every seed, from each seed's manifest: the last seed's ran on the CPU node.
    for i, seed in enumerate(seeds):
        path = sweep / f"seed_{seed}" / "manifest.json"
        seed_manifest = json.loads(path.read_text()) if path.is_file() else {}
        seed_manifest["precision"] = {**manifest["precision"], "stages": {"evaluate": "fp32" if i == len(seeds) - 1 else "bf16",
                                                                          "stress": "bf16"}}
        path.write_text(json.dumps(seed_manifest))
    row = table_rows(section(build_report(sweep)[0].read_text(), "setup"))["precision"][0]
    assert row.endswith("on cpu; the analyses in bf16 (evaluation, stress) and fp32 (evaluation)")


def test_setup_says_whether_the_seeds_stress_passes_ran_compiled(sweep):
    rows = table_rows(section(build_report(sweep)[0].read_text(), "setup"))
    assert rows["torch.compile"] == ["—"]  # the fixture's manifest is from before the record
    manifest_path = sweep / "seed_42" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["compile"] = {"requested": "auto", "stress": True, "fourier": False,
                           "why": "auto: 1,234 forward batches per worker, compiling pays above 1,000"}
    manifest_path.write_text(json.dumps(manifest))
    rows = table_rows(section(build_report(sweep)[0].read_text(), "setup"))
    assert rows["torch.compile"] == ["auto: stress stage compiled; Fourier stage eager (1,234 forward batches per worker, compiling pays above 1,000)"]


def test_setup_names_a_user_model_without_simple_cnn_s_widths(sweep):
    config_path = sweep / "seed_42" / "config.json"
    config = json.loads(config_path.read_text())
    assert table_rows(section(build_report(sweep)[0].read_text(), "setup"))["model"][0].startswith("simple_cnn (widths ")
    config["model"].update(name="torchvision:resnet18", cifar_stem=True, kwargs={})
    config_path.write_text(json.dumps(config))
    assert table_rows(section(build_report(sweep)[0].read_text(), "setup"))["model"] == ["torchvision:resnet18 (CIFAR stem)"]


def test_a_significant_loss_is_drawn_red_and_a_gain_green(tmp_path):
    """Planted corruption differences: a Holm-significant loss gets the red of a loss (it was drawn in the gain's green),
    a significant gain green, the rest grey; counted as pixels of each colour in the drawn figure."""
    from stress.report.sweep_figures import SIGNIFICANT_COLOURS, plot_corruption_gain, significance_colour

    loss = {"mean": -0.06, "low": -0.07, "high": -0.05, "significant_holm": True}
    gain = {"mean": 0.04, "low": 0.02, "high": 0.06, "significant_holm": True}
    plain = {"mean": -0.02, "low": -0.05, "high": 0.01, "significant_holm": False}
    assert [significance_colour(e) for e in (loss, gain, plain)] == [SIGNIFICANT_COLOURS["loss"], SIGNIFICANT_COLOURS["gain"], "grey"]

    def pixels(colour: str, image: np.ndarray) -> int:
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(image[..., :3].astype(int) - rgb).sum(-1) < 30).sum())

    for entries, red, green in (({"brightness": loss, "fog": plain}, True, False), ({"fog": gain, "snow": plain}, False, True)):
        path = plot_corruption_gain({"paired": {"by_corruption": entries}, "n_seeds": 3, "holm_alpha": 0.05}, tmp_path / "gain.png")
        image = np.asarray(Image.open(path).convert("RGB"))
        legend = 2 * 40  # the legend's two coloured markers hold some pixels of each colour in every figure
        assert (pixels(SIGNIFICANT_COLOURS["loss"], image) > legend) == red
        assert (pixels(SIGNIFICANT_COLOURS["gain"], image) > legend) == green


def test_the_headline_says_which_differences_survive_holm(sweep):
    """Planted p-values against Holm's thresholds by hand, over the fixture's 4 headline metrics: three pass their steps,
    one does not; then a first p above 0.05 / 4 stops every later step, however small the later p-values are."""
    summary = summary_of(sweep)
    planted = {"test_acc": 0.001, "mean_corruption_acc": 0.02, "ece": 0.3, "confident_errors_0.9": 0.01}
    for key, p in planted.items():
        summary["aggregate"]["paired"][key]["p"] = p
    (sweep / "summary.json").write_text(json.dumps(summary))
    rows = table_rows(section(build_report(sweep)[0].read_text(), "headline"))
    metrics = [m for m in HEADLINE_METRICS if m.key in HEADLINE_TABLE and m.key in summary["aggregate"]["paired"]]
    # in order: 0.001 <= 0.05/4 yes; 0.01 <= 0.05/3 yes; 0.02 <= 0.05/2 yes; 0.3 > 0.05/1 no
    expected = {"test_acc": "yes", "confident_errors_0.9": "yes", "mean_corruption_acc": "yes", "ece": "no"}
    assert rows["significant after Holm over 4 metrics"] == [expected[m.key] for m in metrics]
    summary["aggregate"]["paired"]["test_acc"]["p"] = 0.0126  # just above 0.05 / 4 at the first step: nothing survives
    summary["aggregate"]["paired"]["confident_errors_0.9"]["p"] = 0.013  # would pass 0.05 / 3 at the second step alone
    (sweep / "summary.json").write_text(json.dumps(summary))
    rows = table_rows(section(build_report(sweep)[0].read_text(), "headline"))
    assert rows["significant after Holm over 4 metrics"] == ["no"] * len(metrics)
