"""Headless Chromium through selenium: open a report, wait for it, screenshot it, print it to PDF.

Needs the Debian packages chromium and chromium-driver and the Python package selenium. The browser
runs with a fresh profile and no network features; reports are opened as file:// URLs and need no
network themselves. Used by `stress screenshot`, `stress report --pdf` and the browser tests.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from pathlib import Path

from stress.errors import StressError

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--hide-scrollbars",  # screenshots as wide as the viewport, without a scrollbar strip
)


def find_browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) executables, or None if either is not installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def start_chromium(profile_dir: str | Path, width: int = 1200, height: int = 900):
    """A selenium Chrome driver for headless Chromium with a fresh profile and the browser log enabled."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if found is None:
        raise StressError("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    browser, driver = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path keeps Selenium Manager from looking for (and downloading) one.
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def set_viewport(driver, width: int, height: int, mobile: bool = False) -> None:
    """Emulate a viewport of width x height CSS pixels (mobile: honour the viewport meta tag)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})


def wait_until_loaded(driver, timeout: float = 60.0) -> None:
    """Wait until the document and its images have loaded and the page has a laid-out size.

    `driver.get` does not always wait: on a busy machine it has returned while a large, self-contained
    file:// report was still in readyState 'loading'."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: d.execute_script(
        "return document.readyState === 'complete'"
        " && Array.from(document.images).every(i => i.complete)"
        " && document.documentElement.getBoundingClientRect().width > 0"))


def page_size(driver) -> tuple[int, int]:
    """(width, height) of the whole laid-out page in CSS pixels, as the DOM reports it."""
    width, height = driver.execute_script(
        "const e = document.documentElement;"
        " return [Math.max(e.scrollWidth, window.innerWidth), Math.max(e.scrollHeight, document.body.scrollHeight)]")
    return int(width), int(height)


def full_page_png(driver, max_height: int = 30000, section: str | None = None) -> bytes:
    """PNG of the whole page (not just the viewport), or of one <section id=...>, at most `max_height` CSS pixels tall."""
    wait_until_loaded(driver)
    width, height = page_size(driver)
    if width <= 0 or height <= 0:
        raise StressError(f"the page has no laid-out size ({width}x{height} CSS pixels); nothing to capture")
    top = 0
    if section:
        box = driver.execute_script(
            "const e = document.getElementById(arguments[0]); if (!e) return null;"
            " const r = e.getBoundingClientRect(); return [r.top + window.scrollY, r.height];", section)
        if box is None:
            ids = driver.execute_script("return Array.from(document.querySelectorAll('section[id]')).map(s => s.id)")
            raise StressError(f"--section {section!r}: no such section in the report (sections: {', '.join(ids)})")
        top, height = int(box[0]), int(box[1])
    clip = {"x": 0, "y": top, "width": width, "height": min(height, max_height), "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
    return base64.b64decode(shot["data"])


def screenshot_report(report_html: str | Path, out_png: str | Path, width: int = 1200, max_height: int = 30000,
                      section: str | None = None) -> Path:
    """Open `report_html` in headless Chromium at `width` CSS pixels and save a full-page PNG (or one section's)."""
    report_html, out_png = Path(report_html).resolve(), Path(out_png)
    with tempfile.TemporaryDirectory(prefix="stress-chromium-") as profile:
        driver = start_chromium(profile, width)
        try:
            set_viewport(driver, width, 900, mobile=width < 600)
            driver.get(report_html.as_uri())
            wait_until_loaded(driver)
            out_png.parent.mkdir(parents=True, exist_ok=True)
            out_png.write_bytes(full_page_png(driver, max_height, section))
        finally:
            driver.quit()
    return out_png


A4_INCHES = (8.27, 11.69)


def count_pdf_pages(pdf: bytes) -> int:
    """Pages in a PDF as Chromium writes it: its page-tree leaves (`/Type /Page`, not `/Pages`)."""
    import re

    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf))


def print_pdf(report_html: str | Path, out_pdf: str | Path, timeout: float = 120.0) -> tuple[Path, int]:
    """Print `report_html` to an A4 PDF with headless Chromium (the report's print stylesheet applies).

    Written to a temporary file beside `out_pdf` and renamed into place, so a failed print leaves
    no half-written PDF. Returns (path, page count)."""
    report_html, out_pdf = Path(report_html).resolve(), Path(out_pdf)
    with tempfile.TemporaryDirectory(prefix="stress-chromium-") as profile:
        driver = start_chromium(profile)
        try:
            driver.set_script_timeout(timeout)
            driver.get(report_html.as_uri())
            wait_until_loaded(driver, timeout)
            printed = driver.execute_cdp_cmd("Page.printToPDF", {
                "paperWidth": A4_INCHES[0], "paperHeight": A4_INCHES[1], "printBackground": True,
                "preferCSSPageSize": True, "displayHeaderFooter": True,
                "headerTemplate": "<span></span>",
                "footerTemplate": '<div style="font-size:8px;width:100%;text-align:center;color:#777">'
                                  '<span class="title"></span> · page <span class="pageNumber"></span> of '
                                  '<span class="totalPages"></span></div>',
            })
        finally:
            driver.quit()
    pdf = base64.b64decode(printed["data"])
    out_pdf.parent.mkdir(parents=True, exist_ok=True)
    partial = out_pdf.with_name(out_pdf.name + ".partial")
    partial.write_bytes(pdf)
    partial.replace(out_pdf)
    return out_pdf, count_pdf_pages(pdf)
