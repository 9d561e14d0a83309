"""The report's failure browser and sortable tables, used as a user would in a real headless Chromium.

Filters are checked against counts computed here from the run folder's arrays (scipy's softmax for
the probabilities), the detail view against the image and labels it should show, pixel by pixel.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from browser_fixture import MODELS, planted_browser_run  # noqa: E402

import stress.report.browser as browser_tools  # noqa: E402
from stress.report.build import rebuild_report  # noqa: E402

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def driver(chromium):
    return chromium


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = planted_browser_run(tmp_path_factory.mktemp("fb") / "run")
    rebuild_report(root, log=lambda line: None)
    return root


@pytest.fixture(scope="module")
def arrays(run) -> dict:
    with np.load(run / "eval" / "browser.npz") as b, np.load(run / "eval" / "predictions.npz") as p, \
            np.load(run / "eval" / "labels.npz") as lab:
        out = {k: b[k] for k in b.files}
        idx = out["indices"]
        out["probs"] = {v: softmax(p[f"{v}_logits"][idx].astype(np.float64), axis=1) for v in MODELS}
        out["suspect"] = lab["suspect"][idx]
    return out


def _open(driver, run: Path, width: int = 1200):
    browser_tools.set_viewport(driver, width, 900, mobile=width < 600)
    started = time.perf_counter()
    driver.get((run / "report.html").as_uri())
    browser_tools.wait_until_loaded(driver)
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.getElementById('fb').dataset.ready") is not None)
    return time.perf_counter() - started


def _set(driver, element_id: str, value):
    """Set a filter the way typing or choosing would, and fire its input event."""
    driver.execute_script(
        "const e = document.getElementById(arguments[0]);"
        " if (e.type === 'checkbox') e.checked = arguments[1]; else e.value = arguments[1];"
        " e.dispatchEvent(new Event('input', {bubbles: true}));", element_id, value)


def _count(driver) -> int:
    return int(driver.find_element("id", "fb-count").text.split(" of ")[0])


def _severe(driver) -> list:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _entries(arrays) -> list[tuple[int, str]]:
    """(position in browser.npz, model) of every thumbnail, the way the file lists them."""
    position = {int(i): k for k, i in enumerate(arrays["indices"])}
    return [(position[int(i)], v) for v in MODELS for i in arrays[f"{v}_failures"]]


def test_the_browser_loads_with_every_failure_and_no_errors(driver, run, arrays):
    seconds = _open(driver, run)
    weight = (run / "report.html").stat().st_size
    print(f"report.html {weight / 1e6:.2f} MB, opened in {seconds:.2f} s")  # measured, not asserted (no wall-clock asserts)
    assert driver.execute_script("return document.getElementById('fb').dataset.ready") == "1"
    total = len(_entries(arrays))
    assert _count(driver) == total == sum(len(arrays[f"{v}_failures"]) for v in MODELS)
    assert _severe(driver) == []


def test_filters_agree_with_the_arrays(driver, run, arrays):
    _open(driver, run)
    entries = _entries(arrays)
    labels = arrays["labels"]
    predicted = {v: arrays["probs"][v].argmax(axis=1) for v in MODELS}
    confidence = {v: arrays["probs"][v].max(axis=1) for v in MODELS}
    k0, v0 = entries[0]
    true_class, pred_class = int(labels[k0]), int(predicted[v0][k0])
    for element, value in (("fb-true", str(true_class)), ("fb-pred", str(pred_class)), ("fb-model", v0)):
        _set(driver, element, value)
    expected = [(k, v) for k, v in entries if labels[k] == true_class and predicted[v][k] == pred_class and v == v0]
    assert _count(driver) == len(expected) >= 1
    models = driver.execute_script("return Array.from(document.querySelectorAll('#fb .fb-t')).map(t => t.dataset.model)")
    assert set(models) == {v0}
    for element in ("fb-true", "fb-pred", "fb-model"):
        _set(driver, element, "")
    _set(driver, "fb-min", "0.8")
    _set(driver, "fb-max", "0.95")
    assert _count(driver) == sum(1 for k, v in entries if 0.8 <= confidence[v][k] <= 0.95)
    _set(driver, "fb-min", "")
    _set(driver, "fb-max", "")
    _set(driver, "fb-both", True)
    wrong_everywhere = np.all([predicted[v] != labels for v in MODELS], axis=0)
    assert _count(driver) == sum(1 for k, _ in entries if wrong_everywhere[k]) >= 1
    _set(driver, "fb-both", False)
    _set(driver, "fb-suspect", True)
    assert _count(driver) == sum(1 for k, _ in entries if arrays["suspect"][k]) >= 1
    _set(driver, "fb-suspect", False)
    assert _count(driver) == len(entries)
    assert _severe(driver) == []


def _big_canvas(driver) -> np.ndarray:
    data = driver.execute_script(
        "const c = document.querySelector('#fb .fb-big'); return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)")
    side = int(round((len(data) / 4) ** 0.5))
    return np.asarray(data, dtype=np.float64).reshape(side, side, 4)[..., :3]


def test_a_click_shows_that_image_with_its_labels_and_probabilities(driver, run, arrays):
    _open(driver, run)
    entries = _entries(arrays)
    pick = 7  # the 8th thumbnail: a baseline failure
    k, v = entries[pick]
    driver.find_elements("css selector", "#fb .fb-t")[pick].click()
    detail = driver.find_element("css selector", "#fb .fb-detail")
    assert int(detail.get_attribute("data-index")) == int(arrays["indices"][k])
    classes = [str(c) for c in range(10)]  # run_small records no class names
    assert f"true: {classes[int(arrays['labels'][k])]}" in detail.text
    for m in MODELS:
        box = driver.find_element("css selector", f"#fb .fb-model[data-model='{m}']")
        rows = [r.text.split() for r in box.find_elements("css selector", ".fb-top tr")[1:]]
        order = np.argsort(-arrays["probs"][m][k], kind="stable")[:3]
        assert [int(c) for c, _ in rows] == [int(c) for c in order]
        np.testing.assert_allclose([float(p) for _, p in rows], arrays["probs"][m][k][order], atol=6e-4)
        assert box.text.startswith(f"{m}: predicts {classes[int(order[0])]}")
    # The big canvas shows this image: each 8 x 8 block of the 32 x 32 picture, scaled up, against the file's pixels.
    shown = _big_canvas(driver)
    scale = shown.shape[0] // 32
    picture = shown[scale * 4::scale * 8, scale * 4::scale * 8]  # block centres, (4, 4, 3)
    expected = arrays["images"][k][:, 4::8, 4::8].transpose(1, 2, 0).astype(np.float64)
    assert np.abs(picture - expected).mean() < 12  # JPEG sprite: a few grey levels
    other = arrays["images"][(k + 1) % len(arrays["images"])][:, 4::8, 4::8].transpose(1, 2, 0).astype(np.float64)
    assert np.abs(picture - other).mean() > 30  # planted: another image does not pass
    # Both models' Grad-CAM canvases for the predicted and the true class were drawn.
    drawn = driver.execute_script(
        "return Array.from(document.querySelectorAll('#fb .fb-cams canvas')).map(c =>"
        " c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some(x => x > 0))")
    assert drawn == [True] * (2 * len(MODELS))
    assert _severe(driver) == []


def test_the_browser_works_on_a_phone(driver, run, arrays):
    _open(driver, run, width=390)
    inner, scroll = driver.execute_script("return [window.innerWidth, document.documentElement.scrollWidth]")
    assert inner == 390 and scroll <= inner + 1, f"page is {scroll} px wide on a {inner} px screen"
    driver.execute_script("document.querySelector('#fb .fb-t').scrollIntoView()")
    driver.find_element("css selector", "#fb .fb-t").click()
    detail = driver.find_element("css selector", "#fb .fb-detail")
    k, _ = _entries(arrays)[0]
    assert int(detail.get_attribute("data-index")) == int(arrays["indices"][k])
    scroll = driver.execute_script("return document.documentElement.scrollWidth")
    assert scroll <= inner + 1, f"the detail view makes the page {scroll} px wide"
    assert _severe(driver) == []


def test_tables_sort_by_a_click_on_a_header(driver, run):
    _open(driver, run)
    table_index = driver.execute_script(
        "const ts = Array.from(document.querySelectorAll('main table'));"
        " return ts.findIndex(t => t.tBodies[0] && t.tBodies[0].rows.length >= 5 && t.tHead"
        "   && Array.from(t.tBodies[0].rows).every(r => r.cells.length > 1 && /\\d/.test(r.cells[1].textContent)));")
    assert table_index >= 0
    header = driver.execute_script(f"return document.querySelectorAll('main table')[{table_index}].tHead.rows[0].cells[1]")
    column = lambda: driver.execute_script(  # noqa: E731
        f"return Array.from(document.querySelectorAll('main table')[{table_index}].tBodies[0].rows).map(r => r.cells[1].textContent)")
    before = column()

    def value(text: str) -> float:
        import re

        return float(re.search(r"[-+]?\d*\.?\d+(e[-+]?\d+)?", text.replace("−", "-"), re.I).group(0))

    header.click()
    ascending = [value(t) for t in column()]
    assert ascending == sorted(ascending) and sorted(column()) == sorted(before)
    header.click()
    descending = [value(t) for t in column()]
    assert descending == sorted(descending, reverse=True)
    assert header.get_attribute("aria-sort") == "descending"
