"""The course site in a real browser: Debian's Chromium, headless, driven by Selenium (tests/conftest.py).

Which site: `make test` passes `--site build/site/smoke`, the site `make site` built from the notebooks the
same `make test` executed, and every page of it is checked. Without --site the test builds a small site
(`python -m utils.site`, MkDocs in strict mode) from one real notebook per module, each given the outputs an
executed notebook has (the preset line, a stand-in line, a figure): no kernel runs, so it takes seconds.
The site is served on 127.0.0.1 and each page must load with no console error and ask no other host for
anything; each notebook page shows its banner, every figure its notebook stored, and its maths typeset with
no TeX left raw; search finds a word of a late notebook; every link between the site's pages resolves.
Screenshots go to build/test-artifacts/site/ (git-ignored). Without Chromium, chromedriver or the site packages
the test is skipped with one line, except in CI (CI=true), where it must run.
"""

from __future__ import annotations

import base64
import functools
import http.server
import importlib.util
import io
import json
import os
import re
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
ARTIFACTS = ROOT / "build" / "test-artifacts" / "site"
SITE_PACKAGES = ("mkdocs", "material", "mkdocs_jupyter", "mathjax")  # requirements.txt, "course site"
# One notebook per module; the last one is the course's last notebook, whose word the search must find.
NOTEBOOKS = ("00_prerequisites/00_start_here.ipynb", "01_deep_learning/02_pytorch_fundamentals.ipynb",
             "02_transformers/03_attention.ipynb", "03_llm_apps/04_embeddings_and_semantic_search.ipynb",
             "04_images_multimodal/05_clip_and_multimodal.ipynb", "05_frontier/04_chatgpt_from_scratch.ipynb")
LATE_WORD = "nanochat"  # appears in 05.04's text and in no other page of the course


def _missing_packages() -> str | None:
    """Why this test cannot build a site here, or None."""
    packages = [name for name in SITE_PACKAGES if importlib.util.find_spec(name) is None]
    return f"needs {', '.join(packages)} (pip install -r requirements.txt)" if packages else None


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


def _built_site(request, tmp_path_factory) -> Path:
    """The folder of a built site (html/ and src/docs/): --site's, else a small one built from NOTEBOOKS."""
    if request.config.getoption("--site"):
        out = Path(request.config.getoption("--site")).resolve()
        if not (out / "html" / "index.html").is_file():
            pytest.fail(f"--site {out}: no site there; build it with `make site`")
        return out
    reason = _missing_packages()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true, so the site test must run, but it {reason}")
        pytest.skip(f"site browser test: {reason}")
    out = tmp_path_factory.mktemp("site")
    _fake_executed(out / "executed")
    site.build(ROOT, out / "executed", "smoke", out)
    assert any((out / "cache").glob("*.json")), "mkdocs-jupyter's cache belongs to the build, not to the cwd"
    return out


@pytest.fixture(scope="module")
def served(request, tmp_path_factory):
    """(base URL, site folder): the built site served on a free 127.0.0.1 port."""
    out = _built_site(request, tmp_path_factory)
    handler = functools.partial(_QuietHandler, directory=str(out / "html"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/", out
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser(chromium):
    chromium.set_script_timeout(60)
    return chromium


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
    driver.save_screenshot(str(ARTIFACTS / f"{name.replace('/', '--') or 'home'}.png"))


# After MathJax's first typesetting: how many formulas it drew, its errors, and TeX it left raw in the prose of
# markdown cells (code, and the formulas it drew, taken out first).
MATHS = r"""
const done = arguments[arguments.length - 1];
if (!window.MathJax || !MathJax.startup) { done({error: "MathJax is not loaded"}); return; }
MathJax.startup.promise.then(() => {
  const raw = [];
  for (const cell of document.querySelectorAll(".jupyter-wrapper .jp-RenderedMarkdown")) {
    const prose = cell.cloneNode(true);
    prose.querySelectorAll("code, pre, mjx-container").forEach((node) => node.remove());
    const left = prose.textContent.match(/\$\$|\\\(|\\\[|\$[^$\s][^$]*\$/);
    if (left) raw.push(left[0].slice(0, 80));
  }
  done({drawn: document.querySelectorAll(".jupyter-wrapper mjx-container").length,
        errors: document.querySelectorAll("mjx-merror").length, raw: raw});
}, (error) => done({error: String(error)}));
"""


def _stored_images(notebook: Path) -> int:
    """How many PNG/JPEG outputs a notebook page should show (each becomes an <img>)."""
    outputs = [o for cell in nbs.read_notebook(notebook).cells for o in cell.get("outputs", [])]
    return sum(1 for o in outputs if {"image/png", "image/jpeg"} & set(o.get("data", {})))


def _check_notebook_page(driver, base: str, docs: Path, name: str) -> list[str]:
    """What is wrong on the notebook page now open: banner, figures, badge, maths."""
    from selenium.webdriver.common.by import By

    problems = []
    banner = driver.find_elements(By.CSS_SELECTOR, ".course-banner")
    if not banner or "Outputs from the smoke preset" not in banner[0].text:
        problems.append("no banner naming the smoke preset")
    shown = driver.execute_script(
        "return [...document.querySelectorAll('.jp-OutputArea img')].filter((i) => i.naturalWidth > 0).length")
    if shown < _stored_images(docs / name):
        problems.append(f"{shown} figures show, the notebook stored {_stored_images(docs / name)}")
    # One Colab badge or two (exercises, solutions): each drawn from the site's own copy of the image.
    badges = driver.find_elements(By.CSS_SELECTOR, "a[href^='https://colab.research.google.com/'] img")
    if not badges or not all(b.get_attribute("src").startswith(base) and
                             driver.execute_script("return arguments[0].naturalWidth", b) > 0 for b in badges):
        problems.append(f"the Colab badges should show, from the site: {[b.get_attribute('src') for b in badges]}")
    # A tqdm bar saved as first drawn reads "0%|          | 0/400 [00:00<?, ?it/s]"; the site shows where it ended.
    outputs = " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea"))
    if re.search(r"\b0%\|[^|\n]*\| 0/[1-9]", outputs):
        problems.append("a progress bar shows its first state, not its last")
    maths = driver.execute_async_script(MATHS)
    if maths.get("error") or maths["errors"] or maths["raw"]:
        problems.append(f"maths: {maths}")
    return problems


def _pages(out: Path) -> tuple[list[str], list[str]]:
    """(module overview pages, notebook pages) of a built site, as site file names ('m/index.md', 'm/x.ipynb')."""
    docs = out / "src" / "docs"
    names = sorted(p.relative_to(docs).as_posix() for p in docs.glob("0[0-5]_*/*") if p.suffix in (".md", ".ipynb"))
    return [n for n in names if n.endswith(".md")], [n for n in names if n.endswith(".ipynb")]


def test_every_page_loads_offline_with_its_banner_figures_and_maths(served, browser):
    from selenium.webdriver.common.by import By

    base, out = served
    overviews, notebooks = _pages(out)
    errors, elsewhere = _open(browser, base)
    assert not errors and not elsewhere, (errors, elsewhere)
    nav = browser.find_element(By.CSS_SELECTOR, "nav.md-nav--primary").text
    assert all(f"0{m} ·" in nav for m in range(6)), f"the navigation should list the six modules: {nav}"
    _screenshot(browser, "")
    problems, with_maths = {}, 0
    for name in overviews + notebooks:
        errors, elsewhere = _open(browser, base, site.page_url(name))
        found = [f"console: {e}" for e in errors] + [f"asked another host: {u}" for u in elsewhere]
        if name.endswith(".ipynb"):
            found += _check_notebook_page(browser, base, out / "src" / "docs", name)
            with_maths += bool(browser.find_elements(By.CSS_SELECTOR, ".jupyter-wrapper mjx-container"))
        _screenshot(browser, site.page_url(name).rstrip("/"))
        if found:
            problems[name] = found
    assert not problems, problems
    assert len(notebooks) >= len(NOTEBOOKS), notebooks
    assert with_maths >= len(NOTEBOOKS), f"maths typeset on {with_maths} notebook pages only"


def test_search_finds_a_word_of_a_late_notebook(served, browser):
    from selenium.webdriver.common.by import By

    base, _ = served
    _open(browser, base)
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
    base, out = served
    seen, queue, broken = set(), [base], []
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
            if target.startswith(base) and target not in seen:
                queue.append(target)
    pages = [u for u in seen if u.endswith("/")]
    assert not broken, broken
    overviews, notebooks = _pages(out)
    assert len(pages) >= 1 + len(overviews) + len(notebooks), f"the crawl should reach every page: {pages}"
