"""The course site: executed notebooks laid out for MkDocs, with the modules as navigation.

    python -m utils.site --preset smoke [--executed DIR] [--out DIR]      (what `make site` runs)

MkDocs with the Material theme renders the pages, mkdocs-jupyter renders each notebook as it was executed
(it never runs one), MathJax comes from the django-static-mathjax wheel: every asset is local, so the site
builds and reads offline. Each notebook page starts with a banner saying which preset produced its outputs,
which stand-ins were used, and the measured run times. Why these tools: docs/site.md.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nbformat import NotebookNode, v4

from utils import notebooks as nbs
from utils.runtime import PRESETS, repo_root

ASSETS = Path(__file__).parent / "templates" / "site"  # site.css, mathjax-config.js, colab-badge.svg
MATHJAX = "es5/tex-svg-full.js"  # one file: the SVG output needs no font files, every TeX extension inside
# The two lines the course prints when it picks a preset or a stand-in (utils/runtime.py choose(), utils/data.py
# and utils/hub.py): the banner is read from the outputs themselves, so it cannot disagree with them.
PRESET_LINE = re.compile(r"^preset: (\w+) \(from [^)\n]*\)(?: · stand-ins for downloads: on \(([^)\n]*)\))?", re.M)
STANDIN_LINE = re.compile(r"^stand-in: (.+)$", re.M)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"  # needs a widget manager from a CDN; text/plain has the end
LINK = re.compile(r"(\]\(|(?:href|src)=\")([^)\"\s]+)")  # a Markdown link target or an HTML href/src value


@dataclass
class Provenance:
    """What a notebook's outputs say about how it ran: the preset, and the stand-ins it announced."""

    preset: str | None = None
    standin_mode: str = ""  # why stand-ins were on ("smoke preset", "COURSE_OFFLINE=1"), "" when off
    standins: list[str] = field(default_factory=list)


def provenance(nb: NotebookNode) -> Provenance:
    """Read the preset line and the 'stand-in: ...' lines from a notebook's printed outputs."""
    found = Provenance()
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output.get("output_type") == "stream" else ""
            match = PRESET_LINE.search(text)
            if match and found.preset is None:
                found.preset, found.standin_mode = match[1], match[2] or ""
            found.standins += [s.split(";")[0].strip() for s in STANDIN_LINE.findall(text)]
    found.standins = list(dict.fromkeys(found.standins))  # a stand-in loaded twice is named once
    return found


def banner(found: Provenance, preset: str, times: dict) -> str:
    """The HTML note at the top of a notebook page: preset, stand-ins, measured run times."""
    measured = times.get(preset, {})
    when = (f" (measured: {nbs.format_seconds(measured['seconds'])} on {measured.get('machine', '?')}, "
            f"{measured.get('date', '?')})" if measured else " (run time not measured)")
    if found.standins:
        standins = "Stand-ins used: " + "; ".join(found.standins) + "."
    elif found.standin_mode:
        standins = f"Stand-ins were on ({found.standin_mode}); this notebook announced none."
    else:
        standins = "No stand-ins: real data and models."
    return (f'<div class="course-banner" role="note"><p><strong>Outputs from the {preset} preset</strong>{when}. '
            f"{standins}</p><p>Run times: {nbs.runtime_text(times)}.</p></div>")


def page_url(name: str) -> str:
    """The site URL (from the site root) of a page: 'm/x.ipynb' -> 'm/x/', 'm/index.md' -> 'm/'."""
    stem = posixpath.splitext(name)[0]
    return "" if stem == "index" else (stem[: -len("index")] if stem.endswith("/index") else stem + "/")


def rewrite_links(text: str, name: str, pages: set[str], repo_url: str, as_url: bool) -> str:
    """Point the relative links of page `name` at site pages, or at the repository for files not in the site.

    A README.md becomes its module's index.md. With `as_url` (notebooks, whose HTML MkDocs does not touch)
    links become final relative URLs; without it (Markdown pages) they stay file paths that MkDocs checks.
    """
    folder = posixpath.dirname(name)

    def fix(match: re.Match) -> str:
        target = match[2]
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target, re.I):  # http:, mailto:, data:, #anchor, /root
            return match[0]
        path, hash_, anchor = target.partition("#")
        resolved = posixpath.normpath(posixpath.join(folder, path))  # from the repository's root
        page = re.sub(r"(^|/)README\.md$", r"\1index.md", resolved)  # a README is its folder's index page
        if page not in pages:  # a file of the repository, or a notebook this build leaves out
            return f"{match[1]}{repo_url}/blob/main/{resolved}{hash_}{anchor}"
        if as_url:
            new = posixpath.relpath(page_url(page) or ".", page_url(name) or ".") + "/"
        else:
            new = posixpath.relpath(page, folder or ".")
        return f"{match[1]}{new}{hash_}{anchor}"

    return LINK.sub(fix, text)


def site_notebook(nb: NotebookNode, name: str, preset: str, pages: set[str], times: dict,
                  repo_url: str) -> NotebookNode:
    """A copy of an executed notebook for the site: banner, local badge, site links, no widget views."""
    found = provenance(nb)
    if found.preset not in (None, preset):
        raise ValueError(f"{name} was executed at the {found.preset} preset, not {preset}: run it again at "
                         f"{preset} (`make site PRESET={preset}` does) before building the {preset} site.")
    badge = posixpath.relpath("assets/colab-badge.svg", page_url(name))
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = rewrite_links(cell.source, name, pages, repo_url, True).replace(nbs.BADGE_IMAGE, badge)
        for output in cell.get("outputs", []):
            if WIDGET_VIEW in output.get("data", {}):  # tqdm bars: text/plain holds the final state
                del output["data"][WIDGET_VIEW]
    nb.metadata.pop("widgets", None)  # else nbconvert loads the widget manager from a CDN
    nb.cells.insert(1, v4.new_markdown_cell(banner(found, preset, times)))
    return nb


def _module_title(readme: Path) -> str:
    """The first '# ' heading of a module README."""
    return next((line[2:].strip() for line in readme.read_text(encoding="utf-8").splitlines()
                 if line.startswith("# ")), readme.parent.name)


def layout(root: Path, executed: Path, preset: str, docs: Path) -> list:
    """Write the MkDocs sources of the site to `docs`; returns the navigation (MkDocs' `nav` list).

    Pages: the course README as the home page, each module README as its module's index, and every
    notebook found in `executed` (run there at `preset`). Modules with no executed notebook are left out.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} is not one of: {', '.join(PRESETS)}.")
    found = sorted(p.relative_to(executed).as_posix() for p in executed.glob("0[0-5]_*/*.ipynb"))
    if not found:
        raise ValueError(f"no executed notebooks in {executed}: run `python -m utils.course run --all "
                         f"--preset {preset} --out {executed}` first.")
    modules = sorted({name.split("/")[0] for name in found})
    pages = {"index.md", *found, *(f"{m}/index.md" for m in modules)}
    times, repo_url = json.loads((root / "benchmarks" / "times.json").read_text(encoding="utf-8")), nbs.repository_url()
    if docs.exists():
        shutil.rmtree(docs)  # a page left from an earlier build would be published with stale outputs
    nav: list = [{"Home": "index.md"}]
    readmes = [("index.md", root / "README.md"), *((f"{m}/index.md", root / m / "README.md") for m in modules)]
    for name, source in readmes:
        text = rewrite_links(source.read_text(encoding="utf-8"), name, pages, repo_url, as_url=False)
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text(text, encoding="utf-8")
    for module in modules:
        entries: list = [{"Overview": f"{module}/index.md"}]
        for name in (n for n in found if n.startswith(module + "/")):
            nb = site_notebook(nbs.read_notebook(executed / name), name, preset, pages, times.get(name, {}), repo_url)
            (docs / name).write_text(nbs.notebook_text(nb), encoding="utf-8")
            entries.append({nbs.notebook_title(nb): name})
        nav.append({_module_title(root / module / "README.md"): entries})
    return nav


def _copy_assets(assets: Path) -> None:
    """The site's own CSS, MathJax config and badge, and MathJax itself from the installed wheel."""
    import mathjax  # django-static-mathjax: MathJax 3 as package data; imported here, only the site needs it

    shutil.copytree(ASSETS, assets, dirs_exist_ok=True)
    shutil.copy2(Path(mathjax.__file__).parent / "static" / "mathjax" / MATHJAX, assets / "mathjax.js")


def mkdocs_config(nav: list, preset: str, repo_url: str, cache: Path) -> dict:
    """The mkdocs.yml of the site, as a dict: Material without web fonts, mkdocs-jupyter reading outputs.

    `cache`: where mkdocs-jupyter keeps each notebook's HTML, keyed by the notebook's content (a rebuild after
    one notebook changed converts that one only). Its default, .cache/ in the working directory, would be
    shared by every build there, and each build deletes the entries it did not use.
    """
    return {
        "site_name": f"Generative AI, from first principles to the frontier ({preset} outputs)",
        "docs_dir": "docs", "nav": nav,
        # A social link, not `repo_url`: with repo_url Material asks the GitHub API for stars on every page view.
        "extra": {"social": [{"icon": "fontawesome/brands/github", "link": repo_url}]},
        "theme": {"name": "material", "font": False,  # font: False, else Material links Google Fonts
                  "features": ["navigation.sections", "navigation.footer", "search.highlight"]},
        "plugins": ["search", {"mkdocs-jupyter": {"execute": False, "include_source": False,
                                                  "custom_mathjax_url": "",  # "": no CDN script tag
                                                  "cache_dir": str(cache.resolve())}}],
        "extra_css": ["assets/site.css"],
        "extra_javascript": ["assets/mathjax-config.js", "assets/mathjax.js"],
        "validation": {"links": {"unrecognized_links": "warn", "absolute_links": "warn"}},
    }


def build(root: Path, executed: Path, preset: str, out: Path) -> Path:
    """Lay out the site in `out`/src and build it with `mkdocs build --strict` into `out`/html; returns that."""
    import yaml

    src, html = out / "src", out / "html"
    nav = layout(root, executed, preset, src / "docs")
    _copy_assets(src / "docs" / "assets")
    config = mkdocs_config(nav, preset, nbs.repository_url(), out / "cache")
    (src / "mkdocs.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about MkDocs 2: see docs/site.md
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f", str(src / "mkdocs.yml"),
               "-d", str(html.resolve())]
    subprocess.run(command, check=True, env=env)
    return html


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m utils.site`; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m utils.site", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="smoke", help="the preset the outputs come from")
    parser.add_argument("--executed", type=Path, default=None, help="default: build/executed/<preset>")
    parser.add_argument("--out", type=Path, default=None, help="default: build/site/<preset>")
    args = parser.parse_args(argv)
    root = repo_root()
    try:
        html = build(root, args.executed or root / "build" / "executed" / args.preset, args.preset,
                     args.out or root / "build" / "site" / args.preset)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"site built in {html}; serve it with: python -m http.server -d {html} 8000")
    return 0


if __name__ == "__main__":
    sys.exit(main())
