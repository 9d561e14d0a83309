"""The report: sections, embedded figures, headline numbers, missing stages, errors, determinism."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stress.artifacts import RunFolder
from stress.constants import VARIANTS
from stress.errors import StressError
from stress.report.build import build_report
from stress.report.figures import write_figures

ROOT = Path(__file__).resolve().parents[3]
FIXTURE = ROOT / "tests" / "fixtures" / "run_small"
SECTIONS = ("headline", "setup", "training", "failures", "labels", "explanations", "robustness", "fourier", "texture", "adversarial", "observations")


@pytest.fixture
def drawn_run(drawn_fixture_run) -> Path:
    """The fixture run with its figures drawn (once per session, tests/conftest.py); copy it before changing anything."""
    return drawn_fixture_run[0]


@pytest.fixture
def run(drawn_run, tmp_path) -> Path:
    root = tmp_path / "run"
    shutil.copytree(drawn_run, root)
    return root


def section_ids(page: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', page)


def test_sections_in_order_and_images_embedded(run):
    html_path, md_path = build_report(run)
    page = html_path.read_text()
    assert section_ids(page) == list(SECTIONS)
    assert "http://" not in page and "https://" not in page  # no external requests
    assert "<script src" not in page and page.count("<script>") >= 1  # only inline JavaScript of its own (sortable tables)
    sources = re.findall(r'<img src="([^"]+)"', page)
    summary = json.loads((run / "summary.json").read_text())
    cases = [c for v in VARIANTS for c in summary["failures"][v]["cases"]]
    assert len(sources) >= 14 + len(cases)
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "was not drawn" not in page
    ids = set(re.findall(r' id="([^"]+)"', page))
    links = re.findall(r'href="#([^"]+)"', page)
    assert "fig-gain_heatmap" in links and set(links) <= ids  # in-page links (nav, observations' figures) all resolve
    markdown = md_path.read_text()
    for c in cases:
        assert f"]({c['figure']})" in markdown  # figures linked relatively
    assert markdown.index("## Headline") < markdown.index("## Setup") < markdown.index("## Observations")


def headline_rows(page: str) -> dict[str, list[str]]:
    table = page.split('<section id="headline">')[1].split("</table>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in rows]
    return {row[0]: row[1:] for row in cells if row}


def test_headline_numbers_equal_the_summary(run):
    html_path, _ = build_report(run)
    rows = headline_rows(html_path.read_text())
    summary = json.loads((run / "summary.json").read_text())
    for v in VARIANTS:
        a = summary["failures"][v]["accuracy"]
        r = summary["robustness"][v]
        c = summary["calibration"][v]
        confident = summary["failures"][v]["confident_errors"]
        clean, corrupted, ece, counts = rows[v]
        assert clean == f"{a['acc']:.3f} [{a['low']:.3f}, {a['high']:.3f}] (n={a['n']})"
        low, high = r["mean_corruption_acc_interval"]
        assert corrupted == f"{r['mean_corruption_acc']:.3f} [{low:.3f}, {high:.3f}] (n={summary['robustness']['images']})"
        assert ece == f"{c['ece']:.3f} → {c['ece_after_temperature']:.3f}"
        assert counts == f"{confident['0.9']} / {confident['0.99']}"


def test_missing_stage_gives_a_note_not_a_section(run):
    (run / "eval" / "robustness.json").unlink()
    (run / "eval" / "calibration.json").unlink()
    summary = json.loads((run / "summary.json").read_text())
    del summary["robustness"], summary["calibration"]
    (run / "summary.json").write_text(json.dumps(summary))
    page = build_report(run)[0].read_text()
    robustness = page.split('<section id="robustness">')[1].split("</section>")[0]
    assert "<img" not in robustness and "<table" not in robustness
    assert robustness.count("stage stress did not run") == 2
    assert headline_rows(page)["baseline"][1] == "—"
    text = re.sub(r"data:image/png;base64,[^\"]+", "", page)
    assert "mean corruption accuracy is" not in text.lower() and "mCE" not in text  # no robustness observations or tables


def setup_rows(page: str) -> dict[str, str]:
    table = page.split('<section id="setup">')[1].split("</table>")[0]
    return {cells[0]: cells[1] for cells in (re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table)) if cells}


@pytest.mark.parametrize("record, expected", [
    ({"requested": "auto", "stress": True, "fourier": True, "why": "auto: 3,434 forward batches per worker, compiling pays above 1,000"},
     "auto: stress and Fourier stages compiled (3,434 forward batches per worker, compiling pays above 1,000)"),
    ({"requested": "auto", "stress": False, "fourier": None, "why": "auto: tasks run on GPUs, where compiling was not measured to pay"},
     "auto: stress stage eager (tasks run on GPUs, where compiling was not measured to pay)"),
    ({"requested": "off", "stress": False, "fourier": False, "why": "--compile off"}, "off: stress and Fourier stages eager"),
    ({"requested": "on", "stress": None, "fourier": True, "why": None}, "on: Fourier stage compiled"),
    # A stress stage finished by an earlier job under another decision: each stage says what it did.
    ({"requested": "auto", "stress": True, "fourier": False, "why": "auto: 2,920 forward batches per worker, compiling pays above 1,000"},
     "auto: stress stage compiled; Fourier stage eager (2,920 forward batches per worker, compiling pays above 1,000)"),
    ({"requested": "auto", "stress": None, "fourier": None, "why": None}, "auto (the stress and Fourier stages did not run)"),
    ({"requested": "auto", "stress": True, "why": "auto: 2,920 forward batches"}, "auto: stress stage compiled (2,920 forward batches)"),
    (None, "—"),  # a manifest from before the record
])
def test_setup_says_whether_the_stress_and_fourier_stages_ran_compiled(run, record, expected):
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.pop("compile", None)
    if record is not None:
        manifest["compile"] = record
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert setup_rows(build_report(run)[0].read_text())["torch.compile"] == expected



@pytest.mark.parametrize("trained, expected", [
    # GPU trainers from a driver without a GPU: the driver's CPU would have said fp32, the trainers ran bf16.
    ({"baseline": ("bf16", "cuda"), "augmented": ("bf16", "cuda")}, "auto (the driver resolves it to fp32 on cpu); training ran in bf16 on cuda"),
    ({"baseline": ("bf16", "cpu"), "augmented": ("fp32", "cpu")}, "auto (the driver resolves it to fp32 on cpu); training ran in bf16 on cpu and fp32 on cpu"),
    ({"baseline": (None, None), "augmented": (None, None)}, "auto (the driver resolves it to fp32 on cpu)"),  # histories from before the record
])
def test_setup_says_what_precision_the_trainers_resolved_on_their_devices(run, trained, expected):
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["precision"] = {"requested": "auto", "resolved": {"cpu": "fp32"}, "cpu_fast_bf16": False}
    (run / "manifest.json").write_text(json.dumps(manifest))
    summary = json.loads((run / "summary.json").read_text())
    for variant, (precision, device) in trained.items():
        summary["variants"][variant].update(precision=precision, device=device)
    (run / "summary.json").write_text(json.dumps(summary))
    assert setup_rows(build_report(run)[0].read_text())["precision"] == expected


@pytest.mark.parametrize("stages, expected", [
    ({"evaluate": "bf16", "stress": "bf16", "attack": "bf16"}, "; the analyses in bf16"),
    # a stress stage resumed on a machine where auto meant another precision; the attacks' tasks on other nodes
    ({"evaluate": "bf16", "stress": "mixed (bf16, fp32)", "fourier": "bf16", "attack": "fp32"},
     "; the analyses in bf16 (evaluation, Fourier) and fp32 (attacks) and mixed (bf16, fp32) (stress)"),
    ({}, ""),  # stages that finished before the record
])
def test_setup_says_what_the_analysis_stages_tasks_ran_in(run, stages, expected):
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["precision"] = {"requested": "auto", "resolved": {"cpu": "bf16"}, "cpu_fast_bf16": True, "stages": stages}
    (run / "manifest.json").write_text(json.dumps(manifest))
    summary = json.loads((run / "summary.json").read_text())
    for variant in summary["variants"].values():
        variant.update(precision="bf16", device="cpu")
    (run / "summary.json").write_text(json.dumps(summary))
    assert setup_rows(build_report(run)[0].read_text())["precision"] == "auto (the driver resolves it to bf16 on cpu); training ran in bf16 on cpu" + expected

def test_run_without_evaluation_keeps_training_only(run):
    summary = json.loads((run / "summary.json").read_text())
    for key in ("failures", "explanations", "robustness", "calibration"):
        del summary[key]
    (run / "summary.json").write_text(json.dumps(summary))
    page = build_report(run)[0].read_text()
    assert section_ids(page) == list(SECTIONS)
    assert page.count("stage evaluate did not run") == 2
    # Clean accuracy falls back to the training record with a Wilson interval over the test set.
    assert headline_rows(page)["baseline"][0].startswith(f"{summary['variants']['baseline']['test_acc']:.3f} [")


def test_seed_section_only_when_present(run):
    summary = json.loads((run / "summary.json").read_text())
    summary["seeds"] = {"n": 3, "clean_gain": {"mean": 0.0123}}
    (run / "summary.json").write_text(json.dumps(summary))
    page = build_report(run)[0].read_text()
    assert section_ids(page) == list(SECTIONS[:-1]) + ["seeds", "observations"]
    assert "clean_gain.mean" in page and "0.012" in page


def test_corrupt_json_names_the_file(run):
    (run / "manifest.json").write_text("{ not json")
    with pytest.raises(StressError, match=r"manifest\.json: corrupt JSON"):
        build_report(run)


def test_rebuilding_gives_the_same_bytes(run):
    first = build_report(run)[0].read_bytes()
    second = build_report(run)[0].read_bytes()
    assert first == second
    assert build_report(run)[1].read_bytes() == build_report(run)[1].read_bytes()


@pytest.mark.slow
def test_job_errors_are_one_line(tmp_path, run):
    job = [sys.executable, str(ROOT / "jobs" / "report.py")]
    missing = subprocess.run(job + [str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0 and "no such run folder" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = subprocess.run(job + [str(tmp_path / "empty")], capture_output=True, text=True)
    assert empty.returncode == 2 and "not a run folder (no summary.json)" in empty.stderr
    (run / "summary.json").write_text("[1, 2")
    corrupt = subprocess.run(job + ["--no-figures", str(run)], capture_output=True, text=True)
    assert corrupt.returncode == 2 and corrupt.stderr.startswith("error: ") and "summary.json: corrupt JSON" in corrupt.stderr
    (run / "summary.json").write_text((FIXTURE / "summary.json").read_text())
    ok = subprocess.run(job + ["--no-figures", str(run)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (run / "report.html").is_file() and (run / "report.md").is_file()


REPORT_INPUTS = [
    ("summary.json", "[]", "summary.json: not a valid run summary (expected a JSON object, got list)"),
    ("summary.json", '{"variants": 5}', "summary.json: not a valid run summary (no 'dataset')"),
    ("config.json", "[]", "config.json: not a valid config (expected a JSON object, got list)"),
    ("manifest.json", "[1]", "manifest.json: not a valid manifest (expected a JSON object, got list)"),
    ("report.html", None, "report.html: cannot write (Is a directory)"),
]
FIGURE_INPUTS = [
    ("eval/robustness.json", '"x"', "robustness.json: not a valid robustness record (expected a JSON object, got str)"),
    ("eval/explanations.json", '{"baseline": "x"}', "explanations.json: not a valid explanation record (the 'baseline' entry is a str"),
    ("eval/calibration.json", "3", "calibration.json: not a valid calibration record (expected a JSON object, got int)"),
    ("eval/failures.json", '{"baseline": {}}', "failures.json: not a valid failure record (no 'augmented')"),
    ("variants/baseline/history.json", "[]", "history.json: not a valid training history (expected a JSON object, got list)"),
]


def put(folder: Path, name: str, content: str | None) -> None:
    target = folder / name
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        target.mkdir()  # a folder where a file goes
    else:
        target.write_text(content)


@pytest.mark.parametrize(("name", "content", "needle"), REPORT_INPUTS, ids=[f"{n}={c}" for n, c, _ in REPORT_INPUTS])
def test_report_inputs_of_the_wrong_structure_are_one_line_errors(run, name, content, needle):
    """Each case used to end in a KeyError, TypeError, AttributeError or an OSError traceback."""
    put(run, name, content)
    with pytest.raises(StressError) as info:
        build_report(run)
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("name", "content", "needle"), FIGURE_INPUTS, ids=[f"{n}={c}" for n, c, _ in FIGURE_INPUTS])
def test_figure_inputs_of_the_wrong_structure_are_one_line_errors(tmp_path, name, content, needle):
    folder = tmp_path / "run"  # only the broken file (and the other history): nothing else is drawn first
    folder.mkdir()
    if name.startswith("variants/"):
        put(folder, "variants/augmented/history.json", (FIXTURE / "variants/augmented/history.json").read_text())
    put(folder, name, content)
    with pytest.raises(StressError) as info:
        write_figures(RunFolder(folder), log=lambda message: None)
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
def test_the_report_job_turns_a_deeper_structure_error_into_one_line(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(FIXTURE / "summary.json", folder / "summary.json")
    put(folder, "variants/augmented/history.json", (FIXTURE / "variants/augmented/history.json").read_text())
    put(folder, "variants/baseline/history.json", '{"epochs": 3}')  # an object, but its epochs are not a list
    result = subprocess.run([sys.executable, str(ROOT / "jobs" / "report.py"), str(folder)], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr[-2000:]
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr, result.stderr
    assert "a file in the run folder has an unexpected structure (TypeError" in result.stderr
    assert "STRESS_DEBUG=1" in result.stderr
    debug = subprocess.run([sys.executable, str(ROOT / "jobs" / "report.py"), str(folder)], capture_output=True, text=True,
                           env={**os.environ, "STRESS_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr


@pytest.mark.slow
def test_an_unexpandable_run_folder_is_a_one_line_error():
    result = subprocess.run([sys.executable, str(ROOT / "jobs" / "report.py"), "~no_such_user_here/run"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr == "error: ~no_such_user_here/run: cannot expand '~' (RUN_DIR: no such user or no home folder)\n"


def test_a_run_without_confident_failures_says_so_instead_of_an_empty_browser(run, tmp_path):
    import shutil

    import numpy as np

    copy = tmp_path / "none"
    shutil.copytree(run, copy)
    empty = np.zeros(0, dtype=np.int64)
    np.savez(copy / "eval" / "browser.npz", indices=empty, images=np.zeros((0, 3, 32, 32), np.uint8), labels=empty,
             baseline_failures=empty, augmented_failures=empty)
    page = build_report(copy)[0].read_text()
    assert 'id="browser"' in page and "nothing to browse" in page and 'id="fb-data"' not in page


def test_the_gain_table_names_the_intervals_its_rows_hold():
    """The fixture run's gains are t-intervals (written before methods were recorded); a clean gain with Newcombe's
    interval, as the stress stage writes it now, turns the header into the mixed wording."""
    from stress.report.run_report import robustness

    summary = json.loads((FIXTURE / "summary.json").read_text())
    assert "paired 95% t-intervals, over test images" in str(robustness(summary).blocks)
    summary["robustness"]["gain"]["clean"]["method"] = "newcombe_paired"
    assert "paired 95% intervals (Newcombe's for 0/1 outcomes, else t), over test images" in str(robustness(summary).blocks)
