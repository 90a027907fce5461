"""Every notebook follows the skeleton of COURSE_STYLE.md.

`notebook_problems()` lists what is wrong with one notebook; the tests run it over every notebook of
the course, and over a deliberately bad fixture to prove that each rule can fail.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p for p in ROOT.glob("0[0-5]_*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)
BAD_FIXTURE = ROOT / "tests" / "fixtures" / "conventions" / "05_frontier" / "99_bad_notebook.ipynb"

# Headings every notebook has, in this order (the skeleton's fixed parts; the middle varies).
REQUIRED_HEADINGS = ("## Objectives", "## Setup", "## Configuration", "## Summary", "## Exercises",
                     "## Further reading")
TITLE = re.compile(r"^# (\d\d)\.(\d\d) · \S")
FORBIDDEN_CODE = {
    r"sys\.path\.(append|insert)|sys\.path\s*\+?=": "edits sys.path (install utils with pip instead)",
    r"^\s*from\s+\S+\s+import\s+\*": "uses a star import (import names explicitly)",
    r"trust_remote_code\s*=\s*True": "loads with trust_remote_code=True",
    r"weights_only\s*=\s*False": "loads with weights_only=False",
    r"\bSMOKE\b|==\s*[\"']smoke[\"']": "branches on the preset outside the parameters cell",
}
MAX_BYTES = 3_000_000


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _headings(nb) -> list[str]:
    lines = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines += [line.strip() for line in cell.source.splitlines() if line.startswith("## ")]
    return lines


def _check_header(nb, path: Path) -> list[str]:
    problems = []
    first = nb.cells[0] if nb.cells else None
    if first is None or first.cell_type != "markdown":
        return ["the first cell is not the markdown title cell"]
    match = TITLE.match(first.source)
    module, number = path.parent.name[:2], path.name[:2]
    if not match:
        problems.append("the title is not of the form '# MM.NN · Title'")
    elif match.groups() != (module, number):
        problems.append(f"the title number {match[1]}.{match[2]} does not match the file ({module}.{number})")
    if "colab-badge.svg" not in first.source:
        problems.append("the title cell has no Open-in-Colab badge")
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for label in ("**Prerequisites**", "**Run time**"):
        if label not in text:
            problems.append(f"no {label} line in the header")
    return problems


def _check_headings(nb) -> list[str]:
    found = _headings(nb)
    missing = [h for h in REQUIRED_HEADINGS if not any(line.startswith(h) for line in found)]
    if missing:
        return [f"missing skeleton heading(s): {', '.join(missing)}"]
    order = [next(i for i, line in enumerate(found) if line.startswith(h)) for h in REQUIRED_HEADINGS]
    return [] if order == sorted(order) else ["skeleton headings are out of order"]


def _check_cells(nb) -> list[str]:
    problems = []
    code = [c for c in nb.cells if c.cell_type == "code"]
    setup = [i for i, c in enumerate(nb.cells) if "setup" in _tags(c)]
    params = [i for i, c in enumerate(nb.cells) if "parameters" in _tags(c)]
    if len(params) != 1:
        problems.append(f"{len(params)} cells tagged 'parameters' (want exactly 1)")
    elif "choose(" not in nb.cells[params[0]].source:
        problems.append("the parameters cell does not pick its config with utils.runtime.choose()")
    if len(setup) != 1:
        problems.append(f"{len(setup)} cells tagged 'setup' (want exactly 1)")
    elif params and setup[0] > params[0]:
        problems.append("the setup cell comes after the parameters cell")
    for cell in code:
        if "parameters" in _tags(cell):
            continue
        for pattern, what in FORBIDDEN_CODE.items():
            if re.search(pattern, cell.source, flags=re.MULTILINE):
                problems.append(f"a code cell {what}: {cell.source.strip().splitlines()[0][:60]!r}")
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                problems.append(f"a stored output is an error ({output.get('ename')})")
    return problems


def _check_exercises(nb) -> list[str]:
    problems = []
    cells = nb.cells
    solutions = [i for i, c in enumerate(cells) if "solution" in _tags(c)]
    if not solutions:
        problems.append("no exercise solution (a code cell tagged 'solution')")
    for i in solutions:
        if cells[i].cell_type != "code":
            problems.append(f"cell {i} is tagged 'solution' but is not code")
            continue
        if "# Hint:" not in cells[i].source:
            problems.append(f"solution cell {i} has no '# Hint:' line (the student release keeps it)")
        following = next((c for c in cells[i + 1:] if c.cell_type == "code"), None)
        if following is None or not re.search(r"\bcheck_\w+\(", following.source):
            problems.append(f"solution cell {i} is not followed by a self-check cell (check_...)")
    return problems


def notebook_problems(path: Path) -> list[str]:
    """Everything about one notebook that breaks the course conventions (empty list: all good)."""
    if path.stat().st_size > MAX_BYTES:
        return [f"{path.stat().st_size / 1e6:.1f} MB: trim outputs and compress figures"]
    nb = nbformat.read(path, as_version=4)
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as error:
        return [f"not a valid notebook: {error.message}"]
    problems = _check_header(nb, path) + _check_headings(nb) + _check_cells(nb) + _check_exercises(nb)
    if nb.metadata.get("kernelspec", {}).get("name") != "python3":
        problems.append("kernelspec is not 'python3' (the portable kernel name)")
    readme = path.parent / "README.md"
    if not readme.is_file():
        return problems + ["there is no module README.md next to the notebook"]
    return problems + readme_row_problems(readme.read_text(encoding="utf-8"), path.name)


def _table_rows(text: str) -> list[tuple[list[str], list[str], str]]:
    """Every body row of the Markdown tables in `text`: (its table's header cells, its cells, the raw line)."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.lstrip().startswith("|"):
            header = None  # a table ends at the first line that is not a row
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set("".join(cells)) <= set("-: "):  # not the |---|---| separator
            rows.append((header, cells, line))
    return rows


def readme_row_problems(readme: str, name: str) -> list[str]:
    """What is wrong with the row of notebook `name` (e.g. 05_gpt.ipynb) in its module README's table.

    Its own row is the one whose first cell is its number; that row links the notebook in its second
    cell and has every column of the table, the measured smoke | laptop | full times last, which
    `python -m utils.course times` rewrites. A link from another row (a prerequisite) does not count.
    """
    number = name[:2]
    own = [(header, cells, line) for header, cells, line in _table_rows(readme) if cells[0] == number]
    if not own:
        return [f"the module README has no row for {name} (a table row '| {number} | [Title]({name}) | ...')"]
    header, cells, line = own[0]
    problems = [] if len(own) == 1 else [f"the module README has {len(own)} rows numbered {number}"]
    if len(cells) < 2 or not re.search(rf"\]\((\./)?{re.escape(name)}\)", cells[1]):
        problems.append(f"the module README row {number} does not link to {name} in its notebook column")
    if header[-3:] != ["smoke", "laptop", "full"]:
        problems.append(f"the module README table of row {number} does not end in '| smoke | laptop | full |'")
    elif len(cells) != len(header) or not line.rstrip().endswith("|"):
        problems.append(f"the module README row {number} is malformed: {len(cells)} cells for the table's "
                        f"{len(header)} columns (it must end '| smoke | laptop | full |')")
    return problems


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found under 0[0-5]_*/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[str(p.relative_to(ROOT)) for p in NOTEBOOKS])
def test_notebook_follows_the_conventions(path: Path):
    problems = notebook_problems(path)
    assert not problems, f"{path.relative_to(ROOT)}:\n  - " + "\n  - ".join(problems)


def test_the_checker_catches_every_rule_on_a_bad_notebook():
    problems = "\n".join(notebook_problems(BAD_FIXTURE))
    expected = [
        "title number", "no Open-in-Colab badge", "no **Run time** line", "missing skeleton heading",
        "2 cells tagged 'parameters'", "0 cells tagged 'setup'", "edits sys.path", "star import",
        "trust_remote_code", "weights_only=False", "branches on the preset", "stored output is an error",
        "has no '# Hint:' line", "not followed by a self-check", "kernelspec",
        "README has no row for 99_bad_notebook.ipynb",
    ]
    missed = [e for e in expected if e not in problems]
    assert not missed, f"the checker let these through: {missed}\nit reported:\n{problems}"


def test_module_readmes_exist_for_every_module():
    for module in ("00_prerequisites", "01_deep_learning", "02_transformers", "03_llm_apps",
                   "04_images_multimodal", "05_frontier"):
        readme = ROOT / module / "README.md"
        assert readme.is_file(), f"{module}/README.md is missing"
        assert "| smoke | laptop | full |" in readme.read_text(encoding="utf-8"), \
            f"{module}/README.md has no table with smoke / laptop / full time columns"


GOOD_ROW = "| 05 | [GPT](05_gpt.ipynb) | build it | [04](04_attention.ipynb) | 9 s | 1 min 2 s | — |"
TABLE = "| # | notebook | objective | prerequisites | smoke | laptop | full |\n|---|---|---|---|---|---|---|\n"


@pytest.mark.parametrize(("row", "problem"), [
    (GOOD_ROW, None),
    ("| 05 | [GPT](./05_gpt.ipynb) | build it | none | 9 s | — | — |", None),
    ("| 06 | [Next](06_next.ipynb) | more | [05](05_gpt.ipynb) | — | — | — |", "has no row for 05_gpt.ipynb"),
    ("| 05 | GPT (coming) | build it | [05](05_gpt.ipynb) | — | — | — |", "row 05 does not link to 05_gpt.ipynb"),
    ("| 05 | [GPT](05_gpt.ipynb) | build it | none | 9 s |", "row 05 is malformed: 5 cells"),
    ("| 05 | [GPT](05_gpt.ipynb) | build it | none | 9 s | — | —", "row 05 is malformed: 7 cells"),
    (f"{GOOD_ROW}\n{GOOD_ROW}", "2 rows numbered 05"),
])
def test_a_notebook_needs_its_own_well_formed_readme_row(row: str, problem: str | None):
    problems = readme_row_problems(f"# 02 · Module\n\n{TABLE}{row}\n", "05_gpt.ipynb")
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


def test_a_readme_table_without_time_columns_is_reported():
    table = "| # | notebook |\n|---|---|\n| 05 | [GPT](05_gpt.ipynb) |\n"
    assert readme_row_problems(table, "05_gpt.ipynb") == [
        "the module README table of row 05 does not end in '| smoke | laptop | full |'"]
