"""Save a full-page screenshot of a run's report.html with headless Chromium (for the README).

Needs the Debian packages chromium and chromium-driver and the Python package selenium.
The browser runs with a fresh profile and no network features; the report is opened as
a file:// URL and needs no network itself.

example: python jobs/screenshot.py runs/default docs/report.png --width 1200
"""

from __future__ import annotations

import argparse
import base64
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from stress.cli import ArgumentParser, run_main  # noqa: E402
from stress.errors import StressError  # noqa: E402
from stress.paths import expand  # noqa: E402

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


def main() -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder holding report.html (see jobs/report.py)")
    parser.add_argument("out", metavar="OUT.png", help="where to write the screenshot")
    parser.add_argument("--width", type=int, default=1200, help="viewport width in CSS pixels; 390 looks like a phone [1200]")
    parser.add_argument("--max-height", type=int, default=30000, help="cut the page after this many CSS pixels [30000]")
    parser.add_argument("--section", metavar="ID", help="capture only this section of the report, e.g. labels or robustness [whole page]")
    args = parser.parse_args()
    report = expand(args.run_dir, "RUN_DIR") / "report.html"
    if not report.is_file():
        raise StressError(f"{report}: missing; build it with python jobs/report.py {args.run_dir}")
    print(f"screenshot: {screenshot_report(report, args.out, args.width, args.max_height, args.section)}")
    return 0


if __name__ == "__main__":
    run_main(main)
