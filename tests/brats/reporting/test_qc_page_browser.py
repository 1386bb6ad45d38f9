"""The QC page in a real browser (headless Debian chromium through chromium-driver and Selenium), from file://.

One browser for the module. Skipped only where neither ``chromium`` nor ``chromedriver`` is installed or Selenium
is missing, and never under CI (``CI`` set, as ``.ci/run`` runs, which installs both): there a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from brats_cggm.brats.reporting.qc_page import write_qc_page
from tests.helpers.qc_reports import write_report_folder

if os.environ.get("CI"):
    from selenium import webdriver  # under CI the test extra is installed: a missing selenium is a failure
else:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
from selenium.webdriver.common.by import By

CHROMIUM = next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)
CHROMEDRIVER = shutil.which("chromedriver")

if CHROMIUM is None and CHROMEDRIVER is None and not os.environ.get("CI"):
    pytest.skip(
        "neither chromium nor chromedriver is installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium logging the page's console; one for the module (a start takes about a second)."""
    assert CHROMIUM and CHROMEDRIVER, f"half a browser installed: chromium {CHROMIUM}, chromedriver {CHROMEDRIVER}"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)  # --no-sandbox: CI runs as root
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def page(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The page of the helpers' four cases, opened; the browser's log read (and emptied) at once."""
    folder = write_report_folder(tmp_path_factory.mktemp("qc"))
    browser.get(write_qc_page(folder).resolve().as_uri())
    browser.loaded_log = browser.get_log("browser")
    return browser


def _cases(driver: Any) -> list[str]:
    return [row.get_attribute("data-case") for row in driver.find_elements(By.CSS_SELECTOR, "#cases tbody tr")]


def _header(driver: Any, label: str) -> Any:
    return driver.find_element(By.XPATH, f"//table[@id='cases']/thead//th[button[normalize-space()='{label}']]")


def test_the_page_loads_without_console_errors_and_shows_every_picture(page: Any):
    assert [entry for entry in page.loaded_log if entry["level"] == "SEVERE"] == []
    images = page.find_elements(By.TAG_NAME, "img")
    assert len(images) == 4
    assert all(page.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) > 0 for i in images)
    assert "E.json" in page.find_element(By.ID, "skipped").text
    assert "broken.json" in page.find_element(By.ID, "unreadable").text


def test_flagged_cases_first_then_a_header_click_sorts_numerically_both_ways(page: Any):
    assert _cases(page) == ["B", "C", "A", "D"]
    header = _header(page, "WT ml")
    header.find_element(By.TAG_NAME, "button").click()
    # as numbers 2.5 < 9 < 10 < 100 (as text it would be 10, 100, 2.5, 9)
    assert _cases(page) == ["B", "D", "A", "C"] and header.get_attribute("aria-sort") == "ascending"
    header.find_element(By.TAG_NAME, "button").click()
    assert _cases(page) == ["C", "A", "D", "B"] and header.get_attribute("aria-sort") == "descending"
    case = _header(page, "Case")
    case.find_element(By.TAG_NAME, "button").click()
    assert _cases(page) == ["A", "B", "C", "D"] and header.get_attribute("aria-sort") is None
    assert [entry for entry in page.get_log("browser") if entry["level"] == "SEVERE"] == []
