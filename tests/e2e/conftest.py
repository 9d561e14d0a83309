"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """A headless Chromium (selenium driver) with a fresh profile, for the module's browser tests; skips without one."""
    import stress.report.browser as tools

    if tools.find_browser() is None:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
    driver = tools.start_chromium(tmp_path_factory.mktemp("chromium-profile"))  # a fresh --user-data-dir
    yield driver
    driver.quit()
