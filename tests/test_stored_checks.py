"""utils.stored_checks: the student release's self-checks, stored in a file and run in the notebook's namespace."""

from __future__ import annotations

import math
import traceback
from pathlib import Path

import pytest

from utils.checks import CheckFailed
from utils.stored_checks import (checked_names, checks_file, load_check, run_cell, run_self_check,
                                 show_self_check)

NOTEBOOK = "00_demo/01_demo"
# Two checks as a course notebook writes them: a reference implementation, random inputs, a fuller hint.
CHECK_1 = '''import math


def reference_hypotenuse(a, b):
    return math.hypot(a, b)  # the answer: not for the student's eyes before a try


check_function(hypotenuse, reference_hypotenuse, lambda rng: tuple(rng.uniform(0, 10, size=2)),
               hint="the square root of a*a + b*b")
'''
CHECK_2 = '''# an experiment: it calls the student's function itself, then checks what it measured
lengths = [hypotenuse(3.0, 4.0), hypotenuse(5.0, 12.0)]
assert lengths == [5.0, 13.0], f"measured {lengths}"
check_equal(len(lengths), 2, hint="two triangles")
'''


@pytest.fixture
def release(tmp_path: Path, monkeypatch) -> Path:
    """A release folder with the stored checks of NOTEBOOK; the working folder is its module folder."""
    stored = tmp_path / "utils" / "self_checks" / f"{NOTEBOOK}.py"
    stored.parent.mkdir(parents=True)
    stored.write_text(checks_file(NOTEBOOK, [("checks hypotenuse", CHECK_1), ("an experiment", CHECK_2)]),
                      encoding="utf-8")
    (tmp_path / "00_demo").mkdir()
    monkeypatch.chdir(tmp_path / "00_demo")  # where a kernel runs a notebook of the release
    return tmp_path


def _namespace(hypotenuse) -> dict:
    """A notebook's globals: its imports of utils.checks and the student's answer."""
    from utils.checks import check_equal, check_function

    return {"check_function": check_function, "check_equal": check_equal, "hypotenuse": hypotenuse}


def test_a_stored_check_reads_back_exactly_and_points_at_its_line(release: Path) -> None:
    for number, check in [(1, CHECK_1), (2, CHECK_2)]:
        source, first_line, path = load_check(NOTEBOOK, number)
        assert source == check
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines[first_line - 1] == check.splitlines()[0]  # tracebacks name the real line of the file


def _right(a, b):
    return math.sqrt(a * a + b * b)


def test_a_right_answer_passes_in_the_notebooks_namespace(release: Path, capsys) -> None:
    namespace = _namespace(_right)
    run_self_check(NOTEBOOK, 1, namespace)
    assert "✓ _right passed" in capsys.readouterr().out
    assert "reference_hypotenuse" in namespace  # as the cell did: what the check defines stays for later cells


def test_the_namespace_is_the_callers_globals_as_in_a_notebook_cell(release: Path, capsys) -> None:
    namespace = {**_namespace(_right), "run_self_check": run_self_check}
    exec(f'run_self_check("{NOTEBOOK}", 1)', namespace)  # noqa: S102 (how IPython runs a cell)
    assert "✓ _right passed" in capsys.readouterr().out and "reference_hypotenuse" in namespace


def test_a_wrong_answer_fails_with_the_fuller_hint_and_where_the_reference_is(release: Path) -> None:
    with pytest.raises(CheckFailed) as failure:
        run_self_check(NOTEBOOK, 1, _namespace(lambda a, b: a + b))
    message = str(failure.value)
    assert "is wrong on trial 1" in message and "Hint: the square root of a*a + b*b" in message
    assert 'self-check 1 of utils/self_checks/00_demo/01_demo.py; show_self_check("00_demo/01_demo", 1)' in message
    shown = "".join(traceback.format_exception(failure.value))
    assert "reference_hypotenuse" not in shown and "math.hypot" not in shown  # nor any line of the check


def test_a_stub_fails_with_the_nudge_and_the_fuller_hint(release: Path) -> None:
    def hypotenuse(a, b):
        raise NotImplementedError("Pythagoras.")

    with pytest.raises(CheckFailed, match=r"not implemented yet(.|\n)*It says: Pythagoras\.(.|\n)*Hint: the square"):
        run_self_check(NOTEBOOK, 1, _namespace(hypotenuse))
    # The experiment calls the stub outside any check_* function: the same kind of message, with its hints.
    with pytest.raises(CheckFailed, match=r"not implemented yet(.|\n)*It says: Pythagoras\.(.|\n)*Hint: two triangles"):
        run_self_check(NOTEBOOK, 2, _namespace(hypotenuse))


def test_a_plain_assert_of_a_check_fails_as_a_check(release: Path) -> None:
    with pytest.raises(CheckFailed, match=r"measured \[7\.0, 17\.0\](.|\n)*self-check 2 of"):
        run_self_check(NOTEBOOK, 2, _namespace(lambda a, b: a + b))


def test_any_other_error_is_raised_as_it_is_with_a_note(release: Path) -> None:
    with pytest.raises(TypeError) as failure:
        run_self_check(NOTEBOOK, 2, _namespace(lambda a: a))  # takes one argument, is given two
    assert "while running self-check 2 of 00_demo/01_demo" in "".join(failure.value.__notes__)


def test_the_last_expression_of_a_check_is_displayed_as_a_cell_would(tmp_path: Path, monkeypatch, capsys) -> None:
    stored = tmp_path / "utils" / "self_checks" / f"{NOTEBOOK}.py"
    stored.parent.mkdir(parents=True)
    stored.write_text(checks_file(NOTEBOOK, [("a value", "x = 20\nx + 22\n"), ("none", "None\n")]), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    run_self_check(NOTEBOOK, 1, {})
    run_self_check(NOTEBOOK, 2, {})
    assert capsys.readouterr().out.split() == ["42"]  # a None result shows nothing, as in Jupyter


def test_show_self_check_prints_the_reference(release: Path, capsys) -> None:
    show_self_check(NOTEBOOK, 1)
    assert "return math.hypot(a, b)" in capsys.readouterr().out


def test_bad_arguments_and_missing_checks_say_what_is_wrong(release: Path, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ValueError, match="number must be a self-check number 1, 2, ...; got 0"):
        run_self_check(NOTEBOOK, 0, {})
    with pytest.raises(ValueError, match="is not a course notebook name"):
        run_self_check("../../etc/passwd", 1, {})
    with pytest.raises(ValueError, match="has no self-check 3; it has 2"):
        run_self_check(NOTEBOOK, 3, {})
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(FileNotFoundError, match="They come with the student release's own utils"):
        run_self_check(NOTEBOOK, 1, {})


def test_a_check_with_a_line_like_a_section_marker_is_refused() -> None:
    with pytest.raises(ValueError, match="self-check 1: a line of it starts like a section marker"):
        checks_file(NOTEBOOK, [("x", "# %% self-check 2 is next\nx = 1\n")])


def test_the_cell_names_what_it_checks() -> None:
    solution = "import math\n\n# Hint: h.\ndef f(x):\n    return x\n\nclass G:\n    pass\n\na, b = 1, 2\nc: int = 3\n"
    assert checked_names(solution) == ["f", "G", "a", "b", "c"]
    assert run_cell(NOTEBOOK, 2, ["f", "a"]) == ('from utils.stored_checks import run_self_check\n\n'
                                                 'run_self_check("00_demo/01_demo", 2)  # checks f, a; '
                                                 'a fuller hint appears only if it fails')
