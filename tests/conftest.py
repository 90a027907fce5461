"""Settings shared by every test run: the tests never read a developer's own .env file; the browser of the
browser tests; the --site option of tests/test_site_browser.py.

utils.runtime reads COURSE_PRESET, COURSE_OFFLINE, COURSE_CACHE and COURSE_DEVICE from the repo's .env when
the environment does not set them. Pointing COURSE_DOTENV at nothing makes the test suite (and the notebook
kernels it starts, which inherit this environment) behave the same on every machine. Tests of the .env
reading point COURSE_DOTENV at their own temporary file.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest


BROWSERS = ("chromium", "chromium-browser", "google-chrome")
INSTALL = "apt-get install chromium chromium-driver"


def pytest_addoption(parser) -> None:
    """--site DIR: the browser test checks every page of a site `make site` built (build/site/<preset>)."""
    parser.addoption("--site", default=None, metavar="DIR",
                     help="tests/test_site_browser.py checks every page of the site built in DIR (make site's "
                          "build/site/<preset>) instead of a small site it builds from six notebooks")


def pytest_configure(config) -> None:  # noqa: ARG001 (pytest's hook signature)
    """Runs once, before collection: ignore any .env in this process and every process it starts."""
    os.environ["COURSE_DOTENV"] = os.devnull


@pytest.fixture(scope="session")
def chat_model() -> tuple[Any, Any]:
    """(model, tokenizer): the real SmolLM2-135M-Instruct of the smoke preset, loaded once per test process."""
    from utils.chat import load_chat_model

    return load_chat_model("smoke", device="cpu")


def _chromium() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or the reason they cannot be used."""
    try:
        import selenium  # noqa: F401 (pinned in requirements.txt)
    except ImportError:
        return "needs selenium (pip install -r requirements.txt)"
    chromium = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        return f"needs Chromium and chromedriver on PATH ({INSTALL})"
    return chromium, driver


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium, headless, driven by Selenium, logging console messages and requests; one per module.

    Without it the test is skipped with the reason, except in CI (CI=true, set by .ci/run, which installs
    Chromium), where it fails: the browser tests must run there.
    """
    found = _chromium()
    if isinstance(found, str):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true, so the browser test must run, but it {found}")
        pytest.skip(f"browser test: {found}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for argument in ("--headless=new", "--window-size=1400,1000", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to run as root (CI) with its sandbox
    # Console messages, and every request a page makes (the site test proves no page asks another host).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()
