"""The real course, not a fixture: notebooks are stamped, times are published, and the student release works."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from utils import notebooks as nbs
from utils.course import release, stamp, update_times

ROOT = Path(__file__).resolve().parent.parent
TIMES = ROOT / "benchmarks" / "times.json"


def test_every_notebook_is_stamped_from_the_one_template():
    stale = stamp(ROOT, nbs.find_notebooks(ROOT), check=True)
    assert not stale, f"run `python -m utils.course stamp`: out of date: {stale}"


def test_recorded_times_are_published_in_readmes_and_headers():
    if not TIMES.is_file():
        pytest.skip("no benchmarks/times.json recorded yet")
    stale = update_times(ROOT, TIMES, check=True)
    assert not stale, f"run `python -m utils.course times`: out of date: {stale}"


@pytest.fixture(scope="module")
def student_release(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("student")
    n_notebooks, n_exercises = release(ROOT, out)
    assert n_notebooks == len(nbs.find_notebooks(ROOT)) and n_exercises >= n_notebooks
    return out


def test_the_release_has_no_solutions_and_valid_notebooks(student_release):
    for original in nbs.find_notebooks(ROOT):
        copy = student_release / original.relative_to(ROOT)
        nb = nbformat.read(copy, as_version=4)
        nbformat.validate(nb)
        solutions = [c for c in nbs.read_notebook(original).cells if "solution" in nbs.cell_tags(c)]
        stubs = [c for c in nb.cells if "exercise" in nbs.cell_tags(c)]
        assert not any("solution" in nbs.cell_tags(c) for c in nb.cells)
        assert len(stubs) == len(solutions)
        for solution, stub in zip(solutions, stubs):
            assert "NotImplementedError" in stub.source or "= ..." in stub.source
            assert "# Hint:" in stub.source
            body = [l for l in solution.source.splitlines() if l.strip().startswith("return ")]
            assert not any(line in stub.source for line in body), "a solution line leaked into the release"
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_a_self_check_fails_on_the_stub_with_the_hint(student_release, monkeypatch):
    # Execute the released start-here notebook: it must run up to the first exercise's self-check and fail
    # there with the helpful message, not with a NameError or a crash earlier on.
    monkeypatch.setenv("COURSE_PRESET", "smoke")
    path = student_release / "00_prerequisites" / "00_start_here.ipynb"
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    with pytest.raises(CellExecutionError) as failure:
        client.execute()
    message = str(failure.value)
    assert "CheckFailed" in message, message[-2000:]
    assert "mean_squared_error is not implemented yet" in message, message[-2000:]
    assert "subtract, square element-wise, then average" in message, "the hint is missing from the failure"
