"""The course site in a real browser: Debian's Chromium, headless, driven by Selenium.

The site is built (`python -m utils.site`, MkDocs in strict mode) from one real notebook per module, each given
the outputs an executed notebook has: the preset line, a stand-in line and a figure. No kernel runs, so the
build takes seconds; `make site` builds the same pages from notebooks really executed. The test serves the
site on 127.0.0.1 and checks: the home page and every notebook page load with no console error and ask no
other host for anything, figures show, maths is typeset, search finds a word of the last notebook, and every
link between the site's pages resolves. Screenshots go to build/test-artifacts/ (git-ignored). Without Chromium,
chromedriver or the site packages the test is skipped with one line, except in CI (CI=true), where it must run.
"""

from __future__ import annotations

import base64
import functools
import http.server
import importlib.util
import io
import json
import os
import shutil
import threading
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import pytest
from nbformat import v4

from utils import notebooks as nbs
from utils import site

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "build" / "test-artifacts"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
SITE_PACKAGES = ("mkdocs", "material", "mkdocs_jupyter", "mathjax")  # requirements.txt, "course site"
# One notebook per module; the last one is the course's last notebook, whose word the search must find.
NOTEBOOKS = ("00_prerequisites/00_start_here.ipynb", "01_deep_learning/02_pytorch_fundamentals.ipynb",
             "02_transformers/03_attention.ipynb", "03_llm_apps/04_embeddings_and_semantic_search.ipynb",
             "04_images_multimodal/05_clip_and_multimodal.ipynb", "05_frontier/04_chatgpt_from_scratch.ipynb")
LATE_WORD = "nanochat"  # appears in 05.04's text and in no other page of the course


def _missing() -> str | None:
    """Why the test cannot run here, or None."""
    packages = [name for name in SITE_PACKAGES if importlib.util.find_spec(name) is None]
    if packages:
        return f"needs {', '.join(packages)} (pip install -r requirements.txt)"
    if not any(shutil.which(name) for name in BROWSERS) or not shutil.which("chromedriver"):
        return "needs Chromium and chromedriver on PATH (apt-get install chromium chromium-driver)"
    return None


def _figure_png() -> str:
    """A small matplotlib figure as base64 PNG, as an executed notebook stores it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2, 3], [3, 1, 2, 0])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _fake_executed(executed: Path) -> None:
    """Copy NOTEBOOKS into `executed` with the outputs of a smoke run: preset line, stand-in, figure."""
    figure = _figure_png()
    for name in NOTEBOOKS:
        nb = nbs.read_notebook(ROOT / name)
        code = next(cell for cell in nb.cells if cell.cell_type == "code")
        code.outputs = [
            v4.new_output("stream", name="stdout", text="preset: smoke (from COURSE_PRESET) · stand-ins for "
                                                        "downloads: on (smoke preset)\n"),
            v4.new_output("stream", name="stdout", text="stand-in: tiny-model → a random tiny model\n"),
            v4.new_output("display_data", data={"image/png": figure, "text/plain": "<Figure size 300x200>"}),
        ]
        (executed / name).parent.mkdir(parents=True, exist_ok=True)
        (executed / name).write_text(nbs.notebook_text(nb), encoding="utf-8")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the built site without a log line per request."""

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The built site, served on a free 127.0.0.1 port: yields its base URL."""
    reason = _missing()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true, so the site test must run, but it {reason}")
        pytest.skip(f"site browser test: {reason}")
    tmp = tmp_path_factory.mktemp("site")
    _fake_executed(tmp / "executed")
    html = site.build(ROOT, tmp / "executed", "smoke", tmp / "out")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser(served):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(path for name in BROWSERS if (path := shutil.which(name)))
    for argument in ("--headless=new", "--window-size=1400,1000", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to run as root (CI) with its sandbox
    # Console messages, and every request the page makes (to prove it asks no other host).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d))


def _open(driver, base: str, page: str = "") -> tuple[list[str], list[str]]:
    """Load the site's `page`; returns (console errors, URLs requested from any other host than `base`)."""
    driver.get_log("browser"), driver.get_log("performance")  # forget the previous page's entries
    driver.get(base + page)
    _wait(driver, lambda d: d.execute_script("return document.readyState") == "complete")
    errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    requested = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    urls = [m["params"]["request"]["url"] for m in requested if m["method"] == "Network.requestWillBeSent"]
    return errors, [u for u in urls if urlparse(u).scheme in ("http", "https") and not u.startswith(base)]


def _screenshot(driver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"site-{name}.png"))


def test_home_and_one_page_per_module_load_offline_with_figures_and_maths(served, browser):
    from selenium.webdriver.common.by import By

    errors, elsewhere = _open(browser, served)
    assert not errors and not elsewhere, (errors, elsewhere)
    nav = browser.find_element(By.CSS_SELECTOR, "nav.md-nav--primary").text
    assert all(f"0{m} ·" in nav for m in range(6)), f"the navigation should list the six modules: {nav}"
    _screenshot(browser, "home")
    for name in NOTEBOOKS:
        errors, elsewhere = _open(browser, served, site.page_url(name))
        assert not errors and not elsewhere, (name, errors, elsewhere)
        banner = browser.find_element(By.CSS_SELECTOR, ".course-banner").text
        assert "Outputs from the smoke preset" in banner and "tiny-model" in banner, banner
        figures = browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea img")
        assert any(browser.execute_script("return arguments[0].naturalWidth", f) > 0 for f in figures), name
        badge = browser.find_element(By.CSS_SELECTOR, "img[alt='Open In Colab']")
        assert browser.execute_script("return arguments[0].naturalWidth", badge) > 0, "the badge image is local"
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".jupyter-wrapper mjx-container svg"))
        assert not browser.find_elements(By.CSS_SELECTOR, "mjx-merror"), f"{name}: a formula failed to typeset"
        _screenshot(browser, name.split("/")[0])


def test_search_finds_a_word_of_the_last_notebook(served, browser):
    from selenium.webdriver.common.by import By

    _open(browser, served)
    browser.find_element(By.CSS_SELECTOR, "label.md-search__icon, .md-search__input").click()
    box = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "input.md-search__input"))
    box.send_keys(LATE_WORD)
    results = _wait(browser, lambda d: [a.get_attribute("href") for a in
                                        d.find_elements(By.CSS_SELECTOR, ".md-search-result__item a")])
    _screenshot(browser, "search")
    assert any("05_frontier/04_chatgpt_from_scratch/" in href for href in results), results


class _Links(HTMLParser):
    """The href/src values of a page's a, link, img and script tags."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        wanted = {"a": "href", "link": "href", "img": "src", "script": "src"}.get(tag)
        self.found += [value for key, value in attrs if key == wanted and value]


def test_every_internal_link_resolves(served):
    seen, queue, broken = set(), [served], []
    while queue:
        url = queue.pop()
        if url in seen:
            continue
        seen.add(url)
        page = url.endswith("/")  # a page is read for its links; any other file only has to exist (HEAD)
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="GET" if page else "HEAD"),
                                        timeout=10) as response:
                body = response.read().decode("utf-8", "replace") if page else ""
        except OSError as err:
            broken.append(f"{url}: {err}")
            continue
        parser = _Links()
        parser.feed(body)
        for link in parser.found:
            target = urldefrag(urljoin(url, link))[0]
            if target.startswith(served) and target not in seen:
                queue.append(target)
    pages = [u for u in seen if u.endswith("/")]
    assert not broken, broken
    assert len(pages) >= 1 + 6 + len(NOTEBOOKS), f"the crawl should reach home, 6 modules, each notebook: {pages}"
