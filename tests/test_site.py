"""utils/site.py without a browser or MkDocs: the banner, the links, the notebook copies and the page layout."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat import v4

from utils import notebooks as nbs
from utils import site

ROOT = Path(__file__).resolve().parent.parent
REPO = "https://github.com/owner/course"
PRESET_SMOKE = "preset: smoke (from COURSE_PRESET) · stand-ins for downloads: on (smoke preset)\n  steps = 5\n"
STANDIN = ("stand-in: mnist → sklearn digits upscaled to 28×28 (1,437 train images); set COURSE_PRESET=laptop "
           "(COURSE_OFFLINE unset) with a network for the real torchvision dataset\n")
TIMES = {"smoke": {"seconds": 16.1, "date": "2026-11-23", "machine": "2 CPU cores"}, "laptop": {"seconds": 27.0}}


def _executed(*texts: str, title: str = "# 01.02 · PyTorch fundamentals") -> nbformat.NotebookNode:
    """A small executed notebook: a title cell with the Colab badge, then one code cell per printed text."""
    badge = nbs.badge_line("01_deep_learning/02_pytorch_fundamentals.ipynb", REPO)
    cells = [v4.new_markdown_cell(f"{title}\n\nA hook, $x^2$.\n\n{badge}")]
    for text in texts:
        cells.append(v4.new_code_cell("print('...')", outputs=[v4.new_output("stream", name="stdout", text=text)]))
    return v4.new_notebook(cells=cells)


def test_provenance_reads_the_preset_and_each_stand_in_once():
    found = site.provenance(_executed(PRESET_SMOKE, STANDIN, STANDIN, STANDIN.replace("1,437 train", "360 test")))
    assert (found.preset, found.standin_mode) == ("smoke", "smoke preset")
    assert found.standins == ["mnist → sklearn digits upscaled to 28×28 (1,437 train images)",
                              "mnist → sklearn digits upscaled to 28×28 (360 test images)"]
    laptop = site.provenance(_executed("preset: laptop (from .env)\n"))
    assert (laptop.preset, laptop.standin_mode, laptop.standins) == ("laptop", "", [])


def test_banner_names_preset_stand_ins_and_measured_times():
    text = site.banner(site.provenance(_executed(PRESET_SMOKE, STANDIN)), "smoke", TIMES)
    assert "Outputs from the smoke preset" in text and "16 s on 2 CPU cores, 2026-11-23" in text
    assert "Stand-ins used: mnist → sklearn digits" in text
    assert "smoke 16 s · laptop 27 s · full not measured" in text
    none = site.banner(site.provenance(_executed(PRESET_SMOKE)), "smoke", {})
    assert "announced none" in none and "run time not measured" in none
    real = site.banner(site.provenance(_executed("preset: laptop (from .env)\n")), "laptop", {})
    assert "No stand-ins" in real


@pytest.mark.parametrize("name, url", [("index.md", ""), ("02_transformers/index.md", "02_transformers/"),
                                       ("02_transformers/03_attention.ipynb", "02_transformers/03_attention/")])
def test_page_url(name, url):
    assert site.page_url(name) == url


PAGES = {"index.md", "00_prerequisites/index.md", "00_prerequisites/00_start_here.ipynb",
         "02_transformers/index.md", "02_transformers/03_attention.ipynb"}


@pytest.mark.parametrize("target, as_url, expected", [
    ("../02_transformers/03_attention.ipynb#masks", True, "../../02_transformers/03_attention/#masks"),
    ("../02_transformers/03_attention.ipynb", False, "../02_transformers/03_attention.ipynb"),
    ("README.md", True, "../"),  # the module README is the module's index page
    ("README.md", False, "index.md"),
    ("../README.md", True, "../../"),
    ("01_python_for_ml.ipynb", True, f"{REPO}/blob/main/00_prerequisites/01_python_for_ml.ipynb"),  # not built
    ("../05_frontier/README.md", True, f"{REPO}/blob/main/05_frontier/README.md"),  # module not built
    ("../utils/train.py", False, f"{REPO}/blob/main/utils/train.py"),  # a file of the repository
    ("https://d2l.ai", True, "https://d2l.ai"), ("#objectives", True, "#objectives"),
])
def test_rewrite_links_points_at_pages_or_at_the_repository(target, as_url, expected):
    name = "00_prerequisites/00_start_here.ipynb" if as_url else "00_prerequisites/index.md"
    assert site.rewrite_links(f"see [x]({target}).", name, PAGES, REPO, as_url) == f"see [x]({expected})."
    html = site.rewrite_links(f'<a href="{target}">x</a>', name, PAGES, REPO, as_url)
    assert html == f'<a href="{expected}">x</a>'


def test_site_notebook_adds_banner_localises_badge_and_drops_widget_views():
    nb = _executed(PRESET_SMOKE, STANDIN)
    bar = v4.new_output("display_data", data={"text/plain": "100%|██████████| 5/5",
                                              site.WIDGET_VIEW: {"model_id": "a"}})
    nb.cells[1].outputs.append(bar)
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    copy = site.site_notebook(nb, "01_deep_learning/02_pytorch_fundamentals.ipynb", "smoke", set(), TIMES, REPO)
    assert 'class="course-banner"' in copy.cells[1].source and "Stand-ins used: mnist" in copy.cells[1].source
    assert nbs.BADGE_IMAGE not in copy.cells[0].source and "(../../assets/colab-badge.svg)" in copy.cells[0].source
    assert "colab.research.google.com/github/owner/course" in copy.cells[0].source  # the badge still opens Colab
    assert "widgets" not in copy.metadata and site.WIDGET_VIEW not in copy.cells[2].outputs[1]["data"]
    assert copy.cells[2].outputs[1]["data"]["text/plain"].startswith("100%")


def test_site_notebook_refuses_outputs_of_another_preset():
    with pytest.raises(ValueError, match="executed at the smoke preset, not laptop"):
        site.site_notebook(_executed(PRESET_SMOKE), "01_deep_learning/02_pytorch_fundamentals.ipynb", "laptop",
                           set(), TIMES, REPO)


def test_layout_writes_home_module_pages_and_notebooks_with_navigation(tmp_path):
    executed = tmp_path / "executed"
    name = "01_deep_learning/02_pytorch_fundamentals.ipynb"
    (executed / name).parent.mkdir(parents=True)
    (executed / name).write_text(nbs.notebook_text(_executed(PRESET_SMOKE, STANDIN)), encoding="utf-8")
    nav = site.layout(ROOT, executed, "smoke", tmp_path / "docs")
    module_title = site._module_title(ROOT / "01_deep_learning" / "README.md")
    assert nav == [{"Home": "index.md"}, {module_title: [{"Overview": "01_deep_learning/index.md"},
                                                         {"01.02 · PyTorch fundamentals": name}]}]
    written = sorted(p.relative_to(tmp_path / "docs").as_posix() for p in (tmp_path / "docs").rglob("*.*"))
    assert written == ["01_deep_learning/02_pytorch_fundamentals.ipynb", "01_deep_learning/index.md", "index.md"]
    module_page = (tmp_path / "docs" / "01_deep_learning" / "index.md").read_text(encoding="utf-8")
    assert "](02_pytorch_fundamentals.ipynb)" in module_page  # built: MkDocs resolves and checks it
    assert "/blob/main/01_deep_learning/01_neural_networks_from_scratch.ipynb)" in module_page  # not built
    copy = json.loads((tmp_path / "docs" / name).read_text(encoding="utf-8"))
    assert "course-banner" in "".join(copy["cells"][1]["source"])


def test_layout_without_executed_notebooks_says_how_to_make_them(tmp_path):
    with pytest.raises(ValueError, match="no executed notebooks.*utils.course run --all --preset smoke"):
        site.layout(ROOT, tmp_path, "smoke", tmp_path / "docs")
    with pytest.raises(ValueError, match="preset 'big' is not one of"):
        site.layout(ROOT, tmp_path, "big", tmp_path / "docs")


def _make_site(folder: Path, *args: str) -> list[str]:
    """The commands `make -n site` would run in `folder` (a copy of the Makefile with one notebook)."""
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("needs GNU make")
    result = subprocess.run(["make", "-n", "site", f"VENV={folder / 'venv'}", *args], cwd=folder,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    commands = result.stdout.replace("\\\n", " ").splitlines()  # a recipe continued with "\" is one command
    return [line for line in commands if "utils.course run" in line or "utils.site" in line]


def test_make_site_executes_only_what_changed_at_the_preset_asked(tmp_path):
    import os

    (tmp_path / "Makefile").write_text((ROOT / "Makefile").read_text(encoding="utf-8"), encoding="utf-8")
    for name in ("requirements.txt", "pyproject.toml", "00_prerequisites/00_start_here.ipynb",
                 "venv/.installed", "build/executed/smoke/00_prerequisites/00_start_here.ipynb"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}", encoding="utf-8")
    source = tmp_path / "00_prerequisites/00_start_here.ipynb"
    executed = tmp_path / "build/executed/smoke/00_prerequisites/00_start_here.ipynb"
    os.utime(tmp_path / "venv/.installed", (2e9, 2e9))  # the environment is installed
    os.utime(source, (1.9e9, 1.9e9))
    os.utime(executed, (1.95e9, 1.95e9))  # executed after its last change: nothing to run again
    assert [line.split()[-1] for line in _make_site(tmp_path)] == ["build/executed/smoke"]  # only utils.site
    os.utime(source, (1.99e9, 1.99e9))  # the notebook changed since
    run, build = _make_site(tmp_path)
    assert "--preset smoke" in run and "HF_HUB_OFFLINE=1" in run and "00_prerequisites/00_start_here.ipynb" in run
    assert "utils.site --preset smoke --executed build/executed/smoke" in build
    run, build = _make_site(tmp_path, "PRESET=laptop")  # never executed at laptop; laptop may download
    assert "--preset laptop --out build/executed/laptop" in run and "HF_HUB_OFFLINE" not in run
    assert "utils.site --preset laptop --executed build/executed/laptop" in build


def test_make_test_executes_notebooks_once_then_builds_and_checks_the_site(tmp_path):
    """`make test`: one pytest run executes the notebooks (their copies feed the site), then the site is built
    from those copies and the browser test checks every page of it."""
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("needs GNU make")
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    result = subprocess.run(["make", "-n", "test", f"VENV={tmp_path / 'venv'}", "-f", str(ROOT / "Makefile"),
                             "-o", f"{tmp_path / 'venv'}/.installed", "-o", "kernel"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.replace("\\\n", " ").splitlines() if line.strip()]
    runs = [i for i, line in enumerate(commands) if " -m pytest " in line]
    assert len(runs) == 2, commands
    first, browser = commands[runs[0]], commands[runs[1]]
    assert "0[0-5]_*/" in first and "--nbval" not in first, "notebooks run by conftest.py, which keeps their copies"
    assert "--ignore=tests/test_site_browser.py" in first
    site_step = next(i for i, line in enumerate(commands) if "site PRESET=smoke" in line)
    assert runs[0] < site_step < runs[1], commands
    assert "tests/test_site_browser.py --site build/site/smoke" in browser and "COURSE_PRESET=smoke" in browser


def test_mkdocs_config_keeps_the_notebook_cache_in_the_build_folder(tmp_path, monkeypatch):
    """mkdocs-jupyter's cache defaults to .cache/ in the working directory (the repository, or a test's cwd)."""
    monkeypatch.chdir(tmp_path)
    config = site.mkdocs_config([{"Home": "index.md"}], "smoke", REPO, Path("build/site/smoke/cache"))
    options = next(p["mkdocs-jupyter"] for p in config["plugins"] if isinstance(p, dict) and "mkdocs-jupyter" in p)
    assert options["cache_dir"] == str(tmp_path / "build/site/smoke/cache"), "absolute: mkdocs runs from elsewhere"
    assert options["execute"] is False and options["custom_mathjax_url"] == ""


def test_site_notebook_localises_every_colab_badge_of_a_cell():
    """The student edition stamps two badges (exercises, solutions): both images come from the site."""
    two = (f"Open in Colab: [![Open the exercises in Colab]({nbs.BADGE_IMAGE})](https://colab.research.google.com/"
           f"github/owner/course/blob/student/x.ipynb) exercises · [![Open the solutions in Colab]({nbs.BADGE_IMAGE})]"
           f"(https://colab.research.google.com/github/owner/course/blob/main/x.ipynb) solutions")
    nb = _executed(PRESET_SMOKE, title=f"# 01.02 · PyTorch fundamentals\n\n{two}")
    badges = nb.cells[0].source.count(nbs.BADGE_IMAGE)  # the two above and the stamped ones _executed adds
    copy = site.site_notebook(nb, "01_deep_learning/02_pytorch_fundamentals.ipynb", "smoke", set(), TIMES, REPO)
    assert nbs.BADGE_IMAGE not in copy.cells[0].source
    assert badges >= 3 and copy.cells[0].source.count("(../../assets/colab-badge.svg)") == badges
    assert "blob/student/x.ipynb" in copy.cells[0].source and "blob/main/x.ipynb" in copy.cells[0].source
