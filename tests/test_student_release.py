"""The real course, not a fixture: notebooks are stamped, times are published, and the student release works."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from utils import notebooks as nbs
from utils.course import release, stamp, update_times
from utils.student import COURSE_FILES

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


def _execute(path: Path, pythonpath: Path | None = None) -> tuple[str, nbformat.NotebookNode]:
    """Run a release notebook in the smoke preset: the error that stopped it ("" if none), the executed copy."""
    nb = nbformat.read(path, as_version=4)
    env = {**os.environ, "COURSE_PRESET": "smoke", "OMP_NUM_THREADS": "1"}
    if pythonpath:  # as `make lab-student` does: the release's own utils first
        env["PYTHONPATH"] = f"{pythonpath}{os.pathsep}{env.get('PYTHONPATH', '')}"
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute(env=env)
    except CellExecutionError as failure:
        return str(failure), nb
    return "", nb


def test_a_self_check_fails_on_the_stub_with_the_fuller_hint_and_no_answer(student_release):
    # Execute the released start-here notebook: it must run up to the first exercise's self-check and fail
    # there with the helpful message, not with a NameError or a crash earlier on. Here the kernel's utils is
    # the course's (as in a plain `make lab`), which finds the stored checks in the release around the notebook.
    message, _ = _execute(student_release / "00_prerequisites" / "00_start_here.ipynb")
    assert "CheckFailed" in message, message[-2000:]
    assert "mean_squared_error is not implemented yet" in message, message[-2000:]
    assert "subtract, square element-wise, then average" in message, "the nudge is missing from the failure"
    assert "Hint: average the squared differences" in message, "the fuller hint is missing from the failure"
    assert 'show_self_check("00_prerequisites/00_start_here", 1)' in message  # where to compare, once tried
    assert "sklearn_mse" not in message and "random_pair" not in message, "the failure shows the check's code"


# Cheap notebooks whose self-checks must pass once the exercises hold the course's own solutions.
FILLED = ["00_prerequisites/00_start_here.ipynb", "00_prerequisites/02_numpy.ipynb"]


@pytest.mark.slow
@pytest.mark.parametrize("name", FILLED)
def test_a_release_notebook_with_the_solutions_filled_in_passes_its_self_checks(student_release, tmp_path, name):
    solutions = [c.source for c in nbs.read_notebook(ROOT / name).cells if "solution" in nbs.cell_tags(c)]
    release_copy = tmp_path / "release"  # a copy: the module fixture stays a fresh release for other tests
    shutil.copytree(student_release, release_copy)
    path = release_copy / name
    nb = nbs.read_notebook(path)
    exercises = [c for c in nb.cells if "exercise" in nbs.cell_tags(c)]
    assert len(exercises) == len(solutions)
    for cell, solution in zip(exercises, solutions):
        cell.source = solution  # what a student who solved everything would have written
    nb.cells.append(nbformat.v4.new_code_cell("import utils.stored_checks\nprint(utils.stored_checks.__file__)"))
    nbformat.write(nb, str(path))
    message, executed = _execute(path, pythonpath=release_copy)
    assert not message, message[-3000:]
    used = Path(executed.cells[-1].outputs[0]["text"].strip())
    assert used == release_copy / "utils" / "stored_checks.py", "the kernel did not use the release's utils"
    runs = [c for c in executed.cells if "run_self_check(" in c.source]
    assert len(runs) == len(solutions)
    for cell in runs:  # each stored check ran in the notebook and printed its "✓ ... passed" line(s)
        printed = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
        assert "✓" in printed, f"{name}: {cell.source!r} printed {printed!r}"


def test_the_release_notebooks_hold_no_self_check_code(student_release):
    # Every self-check cell of the course is in the release, unchanged, but in utils/self_checks/ and not in
    # the notebook: neither its reference code nor its fuller hint can be read under the exercise.
    for original in nbs.find_notebooks(ROOT):
        name = original.relative_to(ROOT).as_posix().removesuffix(".ipynb")
        cells = nbs.read_notebook(original).cells
        checks = [next(c for c in cells[i + 1:] if c.cell_type == "code").source
                  for i, c in enumerate(cells) if "solution" in nbs.cell_tags(c)]
        released = (student_release / f"{name}.ipynb").read_text(encoding="utf-8")
        stored = student_release / "utils" / "self_checks" / f"{name}.py"
        text = stored.read_text(encoding="utf-8")
        compile(text, str(stored), "exec")
        for number, check in enumerate(checks, start=1):
            assert f'run_self_check(\\"{name}\\", {number})' in released, f"{name}: no run of self-check {number}"
            hints = [kw.value.value for node in ast.walk(ast.parse(check)) if isinstance(node, ast.Call)
                     for kw in node.keywords if kw.arg == "hint" and isinstance(kw.value, ast.Constant)]
            for hint in hints:
                assert json.dumps(hint)[1:-1] not in released, f"{name}: the fuller hint {hint!r} is in sight"
            assert f"\n{check.rstrip()}\n" in text, f"{name}: self-check {number} was not stored unchanged"


# --- the stubs keep the author's text ------------------------------------------------------------

# The lines a stub writes itself: the heading, the raise, a `...` answer, a blank line.
GENERATED = re.compile(r"# Exercise: write your solution here\.|\s*raise NotImplementedError\(.*\)"
                       r"|.* = \.\.\.  # your answer|")


def test_every_stub_line_is_the_authors_own_or_a_stub_line(student_release):
    # Signatures, docstrings, hints and imports are cut from the author's text, never re-generated: a line
    # of a stub is either a line of its solution or one of the GENERATED lines.
    for original in nbs.find_notebooks(ROOT):
        solutions = [c for c in nbs.read_notebook(original).cells if "solution" in nbs.cell_tags(c)]
        stubs = [c for c in nbformat.read(student_release / original.relative_to(ROOT), as_version=4).cells
                 if "exercise" in nbs.cell_tags(c)]
        for solution, stub in zip(solutions, stubs):
            written = set(solution.source.splitlines())
            foreign = [line for line in stub.source.splitlines()
                       if line not in written and not GENERATED.fullmatch(line)]
            assert not foreign, f"{original.relative_to(ROOT)}: the stub rewrote the author's lines {foreign}"


# --- the release is a course a student can open ---------------------------------------------------

LINK = re.compile(r"\]\(([^)\s]+)\)")


def _relative_links(markdown: str) -> list[str]:
    """The targets of the relative links of a Markdown text, without their #anchors."""
    targets = [t.split("#")[0] for t in LINK.findall(markdown)]
    return [t for t in targets if t and not re.match(r"[a-z]+:", t)]


def _markdown_texts(root: Path) -> list[tuple[Path, str]]:
    """Every Markdown file under `root` and every markdown cell of its notebooks, with the file they are in."""
    texts = [(p, p.read_text(encoding="utf-8")) for p in sorted(root.rglob("*.md"))]
    for path in nbs.find_notebooks(root):
        texts += [(path, c.source) for c in nbs.read_notebook(path).cells if c.cell_type == "markdown"]
    return texts


def test_the_release_has_what_a_student_needs(student_release):
    for name in ["README.md", "Makefile", *COURSE_FILES, "utils/__init__.py", "utils/checks.py", "utils/course.py",
                 "utils/models/gpt.py", *(p.relative_to(ROOT).as_posix() for p in nbs.module_readmes(ROOT))]:
        assert (student_release / name).is_file(), f"the release has no {name}"
    assert not (student_release / "utils" / "templates").exists() and not (student_release / "tests").exists()
    readme = (student_release / "README.md").read_text(encoding="utf-8")
    assert "make lab" in readme and "make check" in readme and "no `make test`" in readme
    # The guide for a self-learner: how to start, how self-checks and hints work, how to compare with solutions.
    assert "make lab-student" in readme and "*exercises*" in readme and "/tree/student)" in readme
    assert "fuller hint" in readme and "show_self_check(" in readme and "*solutions*" in readme
    assert "git clone" not in readme and "CONTRIBUTING" not in readme, "the student README sends students elsewhere"


def test_every_relative_link_in_the_release_resolves(student_release):
    broken = []
    for path, text in _markdown_texts(student_release):
        course_copy = ROOT / path.relative_to(student_release)
        for target in _relative_links(text):
            if (path.parent / target).exists():
                continue
            # A link that is broken in the course as well (a notebook still marked "coming") is the course's
            # problem; the student README has no course counterpart, so all of its links must resolve.
            if path.name != "README.md" or path.parent != student_release:
                if course_copy.is_file() and not (course_copy.parent / target).exists():
                    continue
            broken.append(f"{path.relative_to(student_release)} -> {target}")
    assert not broken, "links that lead nowhere in the release:\n" + "\n".join(broken)


def _make(directory: Path, *args: str) -> subprocess.CompletedProcess:
    # -n prints the commands without running them; a missing prerequisite file still fails. Under `make test`
    # the outer make's variables (MAKEFLAGS, MAKELEVEL) would reach this one and change what it prints.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VENV")}
    return subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=directory, capture_output=True,
                          text=True, timeout=60, env=env)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_lab_and_check_in_the_release_use_the_release(student_release):
    lab = _make(student_release, "lab")
    assert lab.returncode == 0, lab.stderr
    assert "-m pip install --quiet -r requirements.txt -e ." in lab.stdout  # installs the release's own utils
    command = lab.stdout[lab.stdout.index("jupyter lab"):]
    landing = re.search(r"0\d_\w+/\d\d_\w+\.ipynb", command)
    assert landing and (student_release / landing[0]).is_file(), command
    assert str(ROOT) not in lab.stdout, "make lab in the release points at the course checkout"
    check = _make(student_release, "check", "NB=00_prerequisites/00_start_here.ipynb")
    assert check.returncode == 0, check.stderr
    assert "-m utils.course run 00_prerequisites/00_start_here.ipynb --preset smoke" in check.stdout
    assert "-m utils.course run --all --preset smoke" in _make(student_release, "check").stdout
    test = subprocess.run(["make", "test"], cwd=student_release, capture_output=True, text=True, timeout=60)
    assert test.returncode != 0 and "no test suite" in test.stdout  # says why instead of running anything


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_the_release_makefile_is_the_courses_without_the_authors_targets(student_release, tmp_path):
    venv = f"VENV={tmp_path / 'venv'}"  # a fresh environment: make -n prints every install step
    course, release_ = _make(ROOT, "install", venv), _make(student_release, "install", venv)
    assert course.returncode == 0 and release_.returncode == 0, course.stderr + release_.stderr
    assert release_.stdout == course.stdout
    for target in ("release", "stamp", "times", "benchmark"):
        result = _make(student_release, target)
        assert result.returncode != 0 and "No rule to make target" in result.stderr, target


def test_the_course_command_runs_inside_the_release(student_release):
    env = {**os.environ, "PYTHONPATH": str(student_release)}
    code = "import utils.course, sys; print(utils.course.__file__); sys.exit(utils.course.main(['list']))"
    result = subprocess.run([sys.executable, "-c", code], cwd=student_release, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert Path(lines[0]).resolve() == (student_release / "utils" / "course.py").resolve()  # the release's own
    listed = [line.split()[0] for line in lines[1:]]
    assert listed == [p.relative_to(ROOT).as_posix() for p in nbs.find_notebooks(ROOT)]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_lab_student_builds_the_release_once_and_serves_it_with_its_own_utils(tmp_path):
    student = ROOT / "build" / "student"
    lab = _make(ROOT, "lab-student", f"VENV={tmp_path / 'venv'}")  # a fresh environment: every step is printed
    assert lab.returncode == 0, lab.stderr
    if not (student / ".student-release").is_file():  # built only when there is none yet
        assert "-m utils.course release --out build/student" in lab.stdout
    command = lab.stdout[lab.stdout.index("PYTHONPATH="):]
    assert command.startswith(f'PYTHONPATH="{student}') and f'--ServerApp.root_dir="{student}"' in command
    assert "--LabApp.default_url=/lab/tree/00_prerequisites/00_start_here.ipynb" in command
    assert "--ServerApp.ip=127.0.0.1" in command


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_clean_keeps_the_student_edition_where_answers_may_be(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for name in ("build/student/00_prerequisites/00_start_here.ipynb", "build/executed/smoke/x.ipynb"):
        (tmp_path / name).parent.mkdir(parents=True)
        (tmp_path / name).write_text("{}", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VENV")}
    subprocess.run(["make", "clean"], cwd=tmp_path, check=True, capture_output=True, timeout=60, env=env)
    assert (tmp_path / "build/student/00_prerequisites/00_start_here.ipynb").is_file()
    assert not (tmp_path / "build" / "executed").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_rebuilds_a_stale_student_edition_but_keeps_one_that_holds_work(tmp_path):
    """`make lab-student` after a `git pull`: a new release replaces the old one, unless the student worked in it."""
    out = tmp_path / "student"
    release(ROOT, out)
    marker, notebook = out / ".student-release", out / "00_prerequisites" / "00_start_here.ipynb"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VENV")}

    def build() -> subprocess.CompletedProcess:
        return subprocess.run(["make", "--no-print-directory", f"STUDENT_DIR={out}", str(marker)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120, env=env)

    os.utime(marker, (0, 0))  # older than every notebook of the course, as after a pull
    stale = build()
    assert stale.returncode == 0 and "-m utils.course release --out" in stale.stdout, stale.stdout + stale.stderr
    assert marker.stat().st_mtime > 1e9, "the release wrote its marker again"
    assert "utils.course release" not in build().stdout, "an up-to-date edition is not built again"

    notebook.write_text(notebook.read_text(encoding="utf-8") + "\n", encoding="utf-8")  # the student's work
    work = notebook.read_text(encoding="utf-8")
    os.utime(marker, (0, 0))
    kept = build()
    assert kept.returncode == 0, kept.stdout + kept.stderr  # the lab still opens
    assert "holds your work" in kept.stderr and "kept as it is" in kept.stdout, kept.stdout + kept.stderr
    assert notebook.read_text(encoding="utf-8") == work
