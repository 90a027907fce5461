"""The instructor kit's documents keep up with the course: every experiment exercise has a rubric."""

from __future__ import annotations

import re
from pathlib import Path

from utils import notebooks as nbs
from utils.grading import answer_cells

ROOT = Path(__file__).resolve().parent.parent
RUBRICS = ROOT / "docs" / "rubrics.md"


def experiment_exercises(root: Path) -> list[str]:
    """'NN.MM · Exercise k' for every exercise whose heading says it is an experiment."""
    found = []
    for path in nbs.find_notebooks(root):
        nb = nbs.read_notebook(path)
        for k, index in enumerate(answer_cells(nb), start=1):
            headings = [line for cell in nb.cells[:index] if cell.cell_type == "markdown"
                        for line in cell.source.splitlines() if line.startswith("### Exercise")]
            if headings and "experiment" in headings[-1].lower():
                found.append(f"{path.parent.name[:2]}.{path.name[:2]} · Exercise {k}")
    return found


def test_every_experiment_exercise_has_a_rubric_and_every_rubric_an_experiment():
    expected = experiment_exercises(ROOT)
    written = re.findall(r"^### (\d\d\.\d\d · Exercise \d+) — ", RUBRICS.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(expected) >= 20
    assert sorted(written) == sorted(expected), (
        f"no rubric: {sorted(set(expected) - set(written))}; rubric of no experiment: {sorted(set(written) - set(expected))}")


def test_the_readme_names_the_instructor_commands():
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## For instructors")[1].split("\n## ")[0]
    for command in ("make release", "python -m utils.course grade", "python -m utils.course plan",
                    "docs/rubrics.md", "docs/instructors.md", ".github/workflows/"):
        assert command in section, f"the README's 'For instructors' section does not mention {command}"
