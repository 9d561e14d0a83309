"""The built report in a real headless Chromium: loads, every image decodes, no console errors, fits a phone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from stress.artifacts import RunFolder
from stress.report.build import build_report
from stress.report.figures import write_figures

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "run_small"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser(chromium):
    import stress.report.browser as job

    return job, chromium


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report") / "run_small"
    shutil.copytree(FIXTURE, root)
    write_figures(RunFolder(root), log=lambda message: None)
    return build_report(root)[0]


def test_report_loads_with_every_image(browser, report, tmp_path):
    job, driver = browser
    job.set_viewport(driver, 1200, 900)
    driver.get(report.as_uri())
    job.wait_until_loaded(driver)  # driver.get can return while a large file:// page is still loading
    assert driver.title.startswith("Stress-test report")
    images = driver.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(images) > 20
    assert all(complete and width > 0 and height > 0 for complete, width, height in images), images
    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []
    shot = tmp_path / "report_wide.png"
    shot.write_bytes(job.full_page_png(driver))
    with Image.open(shot) as image:
        assert image.width == 1200 and image.height > 2000  # the whole page, not the viewport


def test_report_fits_a_phone(browser, report, tmp_path):
    job, driver = browser
    job.set_viewport(driver, 390, 844, mobile=True)
    driver.get(report.as_uri())
    job.wait_until_loaded(driver)
    inner, scroll = driver.execute_script("return [window.innerWidth, document.documentElement.scrollWidth]")
    assert inner == 390
    assert scroll <= inner + 1, f"page is {scroll} px wide on a {inner} px screen"
    widest = driver.execute_script("return Math.max(...Array.from(document.images).map(i => i.getBoundingClientRect().right))")
    assert widest <= inner + 1
    shot = tmp_path / "report_phone.png"
    shot.write_bytes(job.full_page_png(driver))
    with Image.open(shot) as image:
        assert image.width == 390


def test_screenshot_job_writes_a_png(browser, report, tmp_path):
    job, _ = browser
    out = job.screenshot_report(report, tmp_path / "readme.png", width=800, max_height=1500)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (800, 1500)


@pytest.fixture(scope="module")
def report_100_classes(tmp_path_factory) -> Path:
    """A tiny real run on 100-class synthetic data (CIFAR-100-shaped), in this process."""
    from conftest import tiny_overrides

    from stress.config import ExperimentConfig, merge
    from stress.driver.fanout import LocalExecutor
    from stress.driver.pipeline import Pipeline

    out = tmp_path_factory.mktemp("c100")
    config = merge(ExperimentConfig(), {**tiny_overrides(), "data.synthetic_classes": 100, "data.synthetic_train": 600,
                                        "data.synthetic_test": 300, "data.val_size": 100, "train.epochs": 1,
                                        "stress.corruptions": ("contrast",), "stress.severities": (1,), "stress.stress_limit": 20,
                                        "stress.faithfulness_images": 4, "stress.shards": 1, "out": str(out), "run_name": "c100"})
    Pipeline(config, log=lambda line: None, executor=LocalExecutor()).run_all()
    return out / "c100" / "report.html"


def test_a_100_class_report_stays_readable(browser, report_100_classes, tmp_path):
    job, driver = browser
    for width, height, mobile in ((1200, 900, False), (390, 844, True)):
        job.set_viewport(driver, width, height, mobile=mobile)
        driver.get(report_100_classes.as_uri())
        job.wait_until_loaded(driver)
        images = driver.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])")
        assert images and all(complete and w > 0 for complete, w, _ in images), images
        inner, scroll = driver.execute_script("return [window.innerWidth, document.documentElement.scrollWidth]")
        assert scroll <= inner + 1, f"page is {scroll} px wide on a {inner} px screen"
        assert [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"] == []
    text = driver.execute_script("return document.body.innerText")
    assert "airplane" not in text  # no CIFAR-10 name anywhere: the dataset's own (checked in tests/unit/driver/test_own_models.py)
    assert "classes / image size\t100 / 32×32" in text
    # The confusion figures (the ranked top confusions at 100 classes, tests/unit/report/test_class_plots.py) stay page-sized.
    sizes = driver.execute_script(
        "return Array.from(document.images).filter(i => i.alt.startsWith('Confusion matrix')).map(i => [i.naturalWidth, i.naturalHeight])")
    assert len(sizes) == 2 and all(w <= 1200 and h <= 1500 for w, h in sizes), sizes
    shot = tmp_path / "c100.png"
    shot.write_bytes(job.full_page_png(driver))


def test_the_report_prints_to_a_pdf_with_the_headline_table(browser, report, tmp_path):
    """`stress report --pdf`'s printing: an A4 PDF whose pages pypdf counts and whose text holds the headline table."""
    pypdf = pytest.importorskip("pypdf")
    job, _ = browser
    out, pages = job.print_pdf(report, tmp_path / "report.pdf")
    reader = pypdf.PdfReader(out)
    assert pages == len(reader.pages) > 3  # our page count agrees with an independent PDF reader
    width, height = (float(v) for v in reader.pages[0].mediabox.upper_right)
    assert (round(width), round(height)) == (595, 842)  # A4 in points
    first = reader.pages[0].extract_text()
    assert "Headline" in first and "clean test accuracy" in first
    summary = json.loads((report.parent / "summary.json").read_text())
    for v in ("baseline", "augmented"):
        assert f"{summary['failures'][v]['accuracy']['acc']:.3f}" in first  # the table's numbers, not just its headers
    assert not list(tmp_path.glob("*.partial"))
    assert "page 1 of" in first  # the footer
