"""The front pages tell the truth: files they name exist, modules not written yet are marked, and `make help`
lists every target the Makefile offers."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(p for p in ROOT.glob("0[0-9]_*") if p.is_dir())


def _repo_files() -> set[str]:
    """Every file of the course (relative paths), outside environments and build outputs."""
    skip = {".git", ".venv", "build", "__pycache__", ".pytest_cache"}
    return {str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(ROOT).parts)}


@pytest.mark.parametrize("page", ["Makefile", "README.md", "CONTRIBUTING.md"])
def test_every_markdown_file_a_front_page_names_is_in_the_repository(page):
    # A reader who follows "see X.md" must find it: by its path, or by its name anywhere in the course.
    files = _repo_files()
    names = {Path(f).name for f in files}
    text = (ROOT / page).read_text(encoding="utf-8")
    named = set(re.findall(r"[\w./-]*\w\.md\b", text))
    missing = sorted(n for n in named if n not in files and n not in names)
    assert not missing, f"{page} names files that are not in the repository: {missing}"


def _syllabus_rows() -> dict[str, str]:
    """The course README's syllabus table: module folder -> its first cell."""
    rows = {}
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\| *\[[^\]]+\]\((0\d_\w+)/README\.md\)([^|]*)\|", line)
        if match:
            rows[match[1]] = line.split("|")[1]
    return rows


def test_the_syllabus_marks_the_modules_that_have_no_notebook_yet():
    rows = _syllabus_rows()
    assert sorted(rows) == [m.name for m in MODULES], "the syllabus table must list every module once"

    def state(module: Path) -> str:  # what the syllabus row must say about the module
        if not any(module.glob("*.ipynb")):
            return "coming"
        return "in progress" if "(coming)" in (module / "README.md").read_text(encoding="utf-8") else "done"

    wrong = {m.name: state(m) for m in MODULES
             if ("coming" in rows[m.name], "in progress" in rows[m.name]) != (state(m) == "coming",
                                                                                state(m) == "in progress")}
    assert not wrong, f"the README's syllabus marks these modules wrongly (they should read as: {wrong})"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_help_lists_every_target():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    phony = set(re.search(r"^\.PHONY:(.*)$", makefile, flags=re.MULTILINE)[1].split())
    shown = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    listed = set(re.findall(r"^make ([\w-]+)", shown, flags=re.MULTILINE))
    assert listed == phony - {"help"}, f"make help lists {sorted(listed)}, the Makefile has {sorted(phony)}"
