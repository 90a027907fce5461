"""The course command line (`python -m utils.course`) on a tiny course built in a temporary folder.

Every test points the CLI at `tmp_path` with `--root` (and at a temporary times.json), so nothing here
writes into the real notebooks, READMEs or benchmarks/times.json.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import tomllib
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from utils import notebooks as nbs
from utils import student
from utils.course import _parser, main
from utils.notebook_runs import RunResult, _first_error, check_preset, print_table, run_notebook
from utils.runtime import repo_root

NB = "00_demo/01_demo.ipynb"
HINT = "the long side is the square root of a*a + b*b."
SOLUTION = f'''import math

# Hint: {HINT}
def hypotenuse(a: float, b: float) -> float:
    """Length of the long side of a right triangle."""
    return math.sqrt(a * a + b * b)

answer = hypotenuse(3.0, 4.0)
print("solution output", answer)
'''
CHECK = '''import math

from utils.checks import check_close, check_function

check_function(hypotenuse, math.hypot, lambda rng: tuple(rng.uniform(0, 10, size=2)), hint="use math.sqrt.")
check_close(answer, 5.0, name="answer", hint="call hypotenuse(3, 4).")
'''
README = """# 00 · Demo

| # | notebook | objective | prerequisites | smoke | laptop | full |
|---|---|---|---|---|---|---|
| 01 | [Demo](01_demo.ipynb) | practise | none | — | — | — |
"""


def _tagged(source: str, tag: str) -> nbformat.NotebookNode:
    return new_code_cell(source, metadata={"tags": [tag]})


def make_course(root: Path, solution: str = SOLUTION) -> Path:
    """A one-notebook course under `root`: title, run-time line, setup, parameters, solution, check."""
    nb = new_notebook(cells=[
        new_markdown_cell("# 00.01 · Demo\n\nA notebook small enough to run in a test."),
        new_markdown_cell("**Run time** (measured on 2 CPU cores; full on a GPU): smoke ? · laptop ? · full ?"),
        _tagged("import os", "setup"),
        _tagged('PRESET = os.environ.get("COURSE_PRESET", "unset")\nprint("preset is", PRESET)', "parameters"),
        new_markdown_cell("## Exercises\n\n1. Write `hypotenuse`."),
        _tagged(solution, "solution"),
        new_code_cell(CHECK),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = root / NB
    path.parent.mkdir(parents=True)
    nbformat.write(nb, str(path))
    (path.parent / "README.md").write_text(README, encoding="utf-8")
    (root / "README.md").write_text("# The course\n", encoding="utf-8")
    return path


@pytest.fixture
def course(tmp_path: Path) -> Path:
    """The path of the demo notebook, stamped, in a fresh temporary course."""
    path = make_course(tmp_path)
    assert main(["--root", str(tmp_path), "stamp"]) == 0
    return path


def test_stamp_adds_badge_and_setup_block_and_is_idempotent(tmp_path: Path) -> None:
    path = make_course(tmp_path)
    assert main(["--root", str(tmp_path), "stamp"]) == 0
    nb = nbs.read_notebook(path)
    assert nb.cells[0].source.splitlines()[-1] == nbs.badge_line(NB, nbs.repository_url())
    setup = nb.cells[2].source
    assert setup.startswith(nbs.SETUP_BEGIN) and setup.endswith(f"{nbs.SETUP_END}\n\nimport os")
    assert '"google.colab" in sys.modules' in setup and "torch" not in setup.replace("never torch", "")
    first = path.read_text(encoding="utf-8")
    assert main(["--root", str(tmp_path), "stamp", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == first  # idempotent: same bytes, block not duplicated
    assert setup.count(nbs.SETUP_BEGIN) == 1


def test_badge_and_install_url_come_from_pyproject(course: Path) -> None:
    pyproject = tomllib.loads((repo_root() / "pyproject.toml").read_text(encoding="utf-8"))
    url = pyproject["project"]["urls"]["Repository"].rstrip("/")
    slug = url.removeprefix("https://github.com/")
    text = course.read_text(encoding="utf-8")
    assert f"https://colab.research.google.com/github/{slug}/blob/main/{NB}" in text  # solutions
    assert f"https://colab.research.google.com/github/{slug}/blob/student/{NB}" in text  # exercises
    setup = nbs.read_notebook(course).cells[2].source
    assert f'genai-course-utils[colab] @ git+{url}"' in setup  # the course installs its default branch


def test_stamp_check_fails_on_stale_notebook_and_passes_after_stamping(tmp_path: Path, capsys) -> None:
    path = make_course(tmp_path)
    assert main(["--root", str(tmp_path), "stamp", "--check"]) == 1
    assert NB in capsys.readouterr().out
    assert "colab-badge" not in path.read_text(encoding="utf-8")  # --check wrote nothing
    assert main(["--root", str(tmp_path), "stamp"]) == 0
    assert main(["--root", str(tmp_path), "stamp", "--check"]) == 0
    nb = nbs.read_notebook(path)  # an edited block is stale again
    nb.cells[2].source = nb.cells[2].source.replace("-q", "-qq")
    nbformat.write(nb, str(path))
    assert main(["--root", str(tmp_path), "stamp", "--check"]) == 1


def test_stamp_without_setup_cell_is_a_clear_error(tmp_path: Path, capsys) -> None:
    path = make_course(tmp_path)
    nb = nbs.read_notebook(path)
    nb.cells[2].metadata["tags"] = []
    nbformat.write(nb, str(path))
    assert main(["--root", str(tmp_path), "stamp"]) == 2
    assert re.search(rf"{NB}: needs exactly one code cell tagged 'setup'; found 0", capsys.readouterr().err)


def test_release_stubs_solutions(course: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "student"
    assert main(["--root", str(tmp_path), "release", "--out", str(out)]) == 0
    assert "1 notebooks (1 exercises stubbed)" in capsys.readouterr().out
    assert (out / "README.md").is_file() and (out / "00_demo" / "README.md").is_file()
    released = nbformat.read(str(out / NB), as_version=4)
    nbformat.validate(released)
    stub = released.cells[5]
    assert nbs.cell_tags(stub) == ["exercise"]
    assert stub.source.startswith(f"# Exercise: write your solution here.\n# Hint: {HINT}\nimport math\n")
    assert "def hypotenuse(a: float, b: float) -> float:" in stub.source
    assert '"""Length of the long side of a right triangle."""' in stub.source
    assert f"raise NotImplementedError({HINT!r})" in stub.source
    assert "answer = ...  # your answer" in stub.source
    assert "math.sqrt" not in stub.source and "solution output" not in stub.source
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in released.cells if c.cell_type == "code")


def _released_stub(root: Path, solution: str) -> str:
    """The exercise cell that `release` makes of `solution` in a one-notebook course under `root`."""
    make_course(root, solution=solution)
    assert main(["--root", str(root), "release", "--out", str(root / "student")]) == 0
    return nbformat.read(str(root / "student" / NB), as_version=4).cells[5].source


def test_stub_keeps_tuple_answers_unpackable_and_classes_importable(tmp_path: Path) -> None:
    source = ('# Hint: think.\nclass Box:\n    """A box."""\n    size = 3\n\n    def area(self) -> int:\n'
              '        return self.size ** 2\n\nx, y = 1, 2\nfor i in range(3):\n    print(i)\n')
    stub = _released_stub(tmp_path, source)
    scope: dict = {}
    exec(stub, scope)  # the stub itself runs; only using it raises
    assert scope["x"] is ... and scope["y"] is ...
    with pytest.raises(NotImplementedError, match="think."):
        scope["Box"]().area()
    assert "print" not in stub


# The signature shapes of the course's solution cells (01.03's adamw_step and kaiming_std, 00.01's class,
# 02.07's ''' docstrings) and a few it may grow. Each header and docstring must reach the student exactly
# as written; `SECRET` marks the body, which must not.
AUTHOR_HEADERS = {
    "multi-line signature": '''
def adamw_step(param: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, t: int, lr: float,
               betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
    """One AdamW step on a tensor (t counts from 1); returns (new param, new m, new v)."""
''',
    "spaced default": '''
def kaiming_std(fan_in: int, negative_slope: float = 0.0) -> float:
    """The weight std that keeps Var(pre-activation) constant: √(2 / ((1 + a²) n))."""
''',
    "keyword-only, no docstring": '''
def norm(x: np.ndarray, *, eps: float = 1e-5, axis: int = -1) -> np.ndarray:
''',
    "decorators, ''' docstring": """
@functools.lru_cache(maxsize=None)
@torch.no_grad()
def fib(n: int) -> int:
    '''The n-th Fibonacci number,
    fib(0) = 0.'''
""",
    "lambda default": '''
def apply(xs: list[int], f=lambda x: x * 2) -> dict[str, list[int]]:
    """Apply f to every x → {"out": [...]}."""
''',
    "async, hanging indent": '''
async def fetch(
    url: str,
    timeout: float = 1.0,
) -> bytes:
''',
}


@pytest.mark.parametrize("header", AUTHOR_HEADERS.values(), ids=AUTHOR_HEADERS.keys())
def test_stub_keeps_the_authors_signature_and_docstring(tmp_path: Path, header: str) -> None:
    header = header.strip("\n")
    body = ("    def helper(k):  # a nested def is part of the answer\n        return k * SECRET\n\n"
            "    for _ in range(2):\n        pass\n    return helper(SECRET)\n")
    stub = _released_stub(tmp_path, f"# Hint: think it through.\n{header}\n{body}")
    assert f"\n{header}\n    raise NotImplementedError('think it through.')\n" in stub, stub
    assert "SECRET" not in stub and "helper" not in stub and "for _" not in stub
    ast.parse(stub)


def test_stub_keeps_a_class_and_its_method_signatures_as_written(tmp_path: Path) -> None:
    solution = '''# Hint: fit stores the mean; transform uses it.
class Scaler(Base):
    """Standardise features with statistics learned by `fit`."""

    def fit(self, rows: list[list[float]],
            ddof: int = 0) -> "Scaler":
        """Learn each column's mean; return self."""
        self.mean = SECRET
        return self

    @property
    def n_features(self) -> int:
        return len(self.mean)
'''
    stub = _released_stub(tmp_path, solution)
    assert stub == '''# Exercise: write your solution here.
# Hint: fit stores the mean; transform uses it.

class Scaler(Base):
    """Standardise features with statistics learned by `fit`."""

    def fit(self, rows: list[list[float]],
            ddof: int = 0) -> "Scaler":
        """Learn each column's mean; return self."""
        raise NotImplementedError('fit stores the mean; transform uses it.')

    @property
    def n_features(self) -> int:
        raise NotImplementedError('fit stores the mean; transform uses it.')
'''


def test_stub_cuts_the_signature_line_at_its_colon_and_keeps_a_hint_of_two_lines(tmp_path: Path) -> None:
    source = ("# Hint: the long side is the square root of a*a + b*b;\n# math.sqrt helps.\n"
              "def hypotenuse(a, b):  # = math.hypot(a, b)\n    return math.hypot(a, b)\n")
    stub = _released_stub(tmp_path, source)
    assert "# Hint: the long side is the square root of a*a + b*b;\n# math.sqrt helps.\n" in stub
    assert "def hypotenuse(a, b):\n" in stub and "math.hypot" not in stub  # the comment could give it away
    assert "raise NotImplementedError('the long side is the square root of a*a + b*b; math.sqrt helps.')" in stub


def test_release_names_notebook_and_cell_of_a_broken_solution(tmp_path: Path, capsys) -> None:
    make_course(tmp_path, solution="# Hint: close the bracket.\nanswer = (1 +\n")
    assert main(["--root", str(tmp_path), "release", "--out", str(tmp_path / "student")]) == 2
    assert f"{NB}, cell 5: the solution cell does not parse" in capsys.readouterr().err


def test_release_badges_and_colab_install_point_at_the_student_branch(course: Path, tmp_path: Path) -> None:
    # The release is published to the `student` branch: its exercises badge opens it there, its solutions
    # badge opens the course on main, and on Colab it installs the student branch's utils (stored checks).
    out, url = tmp_path / "student", nbs.repository_url()
    assert main(["--root", str(tmp_path), "release", "--out", str(out)]) == 0
    released = nbformat.read(str(out / NB), as_version=4)
    assert released.cells[0].source.startswith("# 00.01 · Demo")
    assert released.cells[0].source.splitlines()[-1] == nbs.badge_line(NB, url)
    assert f"genai-course-utils[colab] @ git+{url}@student\"" in released.cells[2].source
    other = "https://github.com/a-school/genai-course"  # a school publishing its own fork
    assert main(["--root", str(tmp_path), "release", "--out", str(out), "--colab-url", other]) == 0
    released = nbformat.read(str(out / NB), as_version=4)
    assert nbs.badge_line(NB, other) in released.cells[0].source
    assert f"@ git+{other}@student\"" in released.cells[2].source
    assert f"{other}/tree/student" in (out / "README.md").read_text(encoding="utf-8")


def test_release_moves_the_self_check_out_of_the_notebook(course: Path, tmp_path: Path) -> None:
    out = tmp_path / "student"
    assert main(["--root", str(tmp_path), "release", "--out", str(out)]) == 0
    check = nbformat.read(str(out / NB), as_version=4).cells[6]
    assert check.source == ('from utils.stored_checks import run_self_check\n\n'
                            'run_self_check("00_demo/01_demo", 1)  # checks hypotenuse, answer; '
                            'a fuller hint appears only if it fails')
    assert "math.hypot" not in (out / NB).read_text(encoding="utf-8")  # the reference ...
    assert "use math.sqrt." not in (out / NB).read_text(encoding="utf-8")  # ... and the fuller hint are gone
    stored = out / "utils" / "self_checks" / "00_demo" / "01_demo.py"
    text = stored.read_text(encoding="utf-8")
    assert "# %% self-check 1: checks hypotenuse, answer\n" + CHECK in text  # moved whole, unchanged
    compile(text, str(stored), "exec")  # a Python file a student can open and read
    assert nbformat.read(str(course), as_version=4).cells[6].source == CHECK  # the course keeps its cell


def test_release_refuses_a_solution_without_its_self_check(tmp_path: Path, capsys) -> None:
    path = make_course(tmp_path)
    nb = nbformat.read(str(path), as_version=4)
    nb.cells[6].source = "print(answer)"  # no check_* call: nothing to move, and nothing checks the answer
    nbformat.write(nb, str(path))
    assert main(["--root", str(tmp_path), "release", "--out", str(tmp_path / "student")]) == 2
    assert f"{NB}, cell 5: a solution cell must be followed by its self-check" in capsys.readouterr().err


def test_a_new_release_never_replaces_notebooks_a_student_changed(course: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "student"
    assert main(["--root", str(tmp_path), "release", "--out", str(out)]) == 0
    work = (out / NB).read_text(encoding="utf-8").replace("raise NotImplementedError", "return 5.0  # mine")
    (out / NB).write_text(work, encoding="utf-8")
    assert main(["--root", str(tmp_path), "release", "--out", str(out)]) == 2
    assert f"holds your work: {NB} changed since the release was written" in capsys.readouterr().err
    assert (out / NB).read_text(encoding="utf-8") == work


def test_release_refuses_a_bad_colab_url_and_the_course_folder_as_its_output(course: Path, tmp_path: Path,
                                                                              capsys) -> None:
    before = course.read_bytes()
    assert main(["--root", str(tmp_path), "release", "--out", str(tmp_path)]) == 2
    assert "is the course itself" in capsys.readouterr().err
    assert course.read_bytes() == before  # the solutions were not replaced by stubs
    out = tmp_path / "student"
    assert main(["--root", str(tmp_path), "release", "--out", str(out), "--colab-url", "https://x.org/a/b"]) == 2
    assert "is not https://github.com/<owner>/<repo>" in capsys.readouterr().err and not out.exists()


COURSE_MAKEFILE = """# The course: make lab, make test.
# A second line of introduction.

VENV         ?= .venv
BIN          := $(VENV)/bin
$(if $(strip $(VENV)),,$(error VENV is empty: set it))
FLAGS        := -a \\
\t-b

.PHONY: help lab test release

help:
\t@echo "make test"

# Opens the course.
lab: kernel
\t$(BIN)/jupyter lab \\
\t\t--flag
# Runs every test.
test: kernel
\tpytest tests
release stamp: a \\
    b
\t$(BIN)/python -m utils.course $@

clean:
\trm -rf build
"""


def test_the_student_makefile_is_the_course_makefile_without_the_authors_targets() -> None:
    makefile = student.student_makefile(COURSE_MAKEFILE, "# student\n\n@COURSE_MAKEFILE@\n\ncheck:\n\techo\n")
    assert makefile == """# student

VENV         ?= .venv
BIN          := $(VENV)/bin
$(if $(strip $(VENV)),,$(error VENV is empty: set it))
FLAGS        := -a \\
\t-b

# Opens the course.
lab: kernel
\t$(BIN)/jupyter lab \\
\t\t--flag

clean:
\trm -rf build

check:
\techo
"""


def _break_cell_ids(path: Path) -> None:
    """A repeated id (a pasted cell) and a missing one: nbformat repairs both with random ids on reading."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data["cells"][1]["id"] = data["cells"][0]["id"]
    del data["cells"][4]["id"]
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_stamp_times_and_release_write_the_same_bytes_every_time(tmp_path: Path) -> None:
    _break_cell_ids(make_course(tmp_path / "course"))
    times = tmp_path / "times.json"
    times.write_text(json.dumps({NB: {"smoke": {"seconds": 3.0, "date": "2025-01-01", "machine": "x"}}}))
    copies = [tmp_path / "a", tmp_path / "b"]
    for copy in copies:  # the same course, processed twice from scratch
        shutil.copytree(tmp_path / "course", copy)
        for command in (["stamp"], ["times", "--times-file", str(times)], ["release", "--out", str(copy / "s")]):
            assert main(["--root", str(copy), *command]) == 0
    assert _tree(copies[0]) == _tree(copies[1])
    source, student = (nbs.read_notebook(p) for p in (copies[0] / NB, copies[0] / "s" / NB))
    ids = [cell.id for cell in source.cells]
    assert len(set(ids)) == len(ids) and ids == [cell.id for cell in student.cells]
    before = _tree(copies[0])  # and once more on the result: nothing changes
    for command in (["stamp"], ["times", "--times-file", str(times)], ["release", "--out", str(copies[0] / "s")]):
        assert main(["--root", str(copies[0]), *command]) == 0
    assert _tree(copies[0]) == before


def _built_notebook() -> nbformat.NotebookNode:
    """A notebook built in code: nbformat gives each new cell a random id."""
    return new_notebook(cells=[new_markdown_cell("# 00.01 · Demo"), new_code_cell("x = 1"), new_code_cell("x = 1"),
                               new_code_cell("print(x)")])


def test_a_notebook_built_in_code_gets_the_same_ids_each_time_it_is_saved(tmp_path: Path) -> None:
    path, other = tmp_path / "demo.ipynb", tmp_path / "other.ipynb"
    assert nbs.save_notebook(_built_notebook(), path) is True
    first = path.read_bytes()
    assert nbs.save_notebook(_built_notebook(), path) is False and path.read_bytes() == first
    nbs.save_notebook(_built_notebook(), other)
    assert other.read_bytes() == first  # derived from the content, not from chance or the file name
    ids = [cell.id for cell in nbs.read_notebook(path).cells]
    assert len(set(ids)) == 4  # two cells with the same source still get different ids
    nb = _built_notebook()  # regenerated with an edit and a new cell: only the new cell gets a new id
    nb.cells[3].source = "print(x + 1)"
    nb.cells.insert(1, new_markdown_cell("A new paragraph."))
    nbs.save_notebook(nb, path)
    new_ids = [cell.id for cell in nbs.read_notebook(path).cells]
    assert new_ids[:1] + new_ids[2:] == ids and new_ids[1] not in ids


def test_a_notebook_without_ids_is_upgraded_with_derived_ids(tmp_path: Path) -> None:
    nb = {"nbformat": 4, "nbformat_minor": 4, "metadata": {},
          "cells": [{"cell_type": "markdown", "metadata": {}, "source": "# Title"},
                    {"cell_type": "code", "metadata": {}, "source": "x = 1", "outputs": [], "execution_count": None}]}
    texts = []
    for name in ("a.ipynb", "b.ipynb"):
        (tmp_path / name).write_text(json.dumps(nb), encoding="utf-8")
        texts.append(nbs.notebook_text(nbs.read_notebook(tmp_path / name)))
    assert texts[0] == texts[1]
    written = json.loads(texts[0])
    assert written["nbformat_minor"] == 5 and all(re.fullmatch(r"[0-9a-f]{8}", c["id"]) for c in written["cells"])


def test_run_executes_records_times_and_released_copy_fails_at_the_check(course: Path, tmp_path: Path) -> None:
    times_file, out = tmp_path / "times.json", tmp_path / "executed"
    argv = ["--root", str(tmp_path), "run", str(course), "--preset", "smoke", "--out", str(out),
            "--record", "--times-file", str(times_file)]
    assert main(argv) == 0  # the original notebook, solution included, runs without error
    executed = nbformat.read(str(out / NB), as_version=4)
    assert "preset is smoke" in executed.cells[3].outputs[0]["text"]  # COURSE_PRESET reached the kernel
    entry = json.loads(times_file.read_text(encoding="utf-8"))[NB]["smoke"]
    assert entry["seconds"] > 0 and re.fullmatch(r"\d{4}-\d\d-\d\d", entry["date"])
    assert re.match(r"\d+ CPU cores", entry["machine"])

    student = tmp_path / "student"
    assert main(["--root", str(tmp_path), "release", "--out", str(student)]) == 0
    result = run_notebook(student / NB, NB, "smoke", tmp_path / "student_run.ipynb", timeout=60)
    assert not result.ok and result.error.startswith("cell 6: CheckFailed")  # the check cell, not before
    assert HINT in result.error


BAR_NOTEBOOK = new_notebook(cells=[new_code_cell(
    "from tqdm.auto import tqdm\n\nfor step in tqdm(range(5), desc='steps'):\n    pass\n")],
    metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})


def test_run_saves_finished_progress_bars_and_prints_no_kernel_warning(tmp_path: Path, capfd) -> None:
    path, out = tmp_path / "bar.ipynb", tmp_path / "executed"
    nbformat.write(BAR_NOTEBOOK, str(path))
    assert main(["--root", str(tmp_path), "run", str(path), "--out", str(out)]) == 0
    printed = capfd.readouterr()
    assert "without encryption" not in printed.out + printed.err  # the kernel's TCP warning
    (output,) = nbformat.read(str(out / "bar.ipynb"), as_version=4).cells[0].outputs
    assert "application/vnd.jupyter.widget-view+json" in output.data  # the live widget, for Jupyter
    text = output.data["text/plain"]  # what GitHub and any text viewer show
    assert text.startswith("steps: 100%|██████████| 5/5 [") and "0/5" not in text


def test_the_summary_keeps_the_advice_at_the_end_of_a_long_error(capsys) -> None:
    advice = "Either connect to the internet, or set COURSE_OFFLINE=1 to use the offline stand-in."
    message = "Could not download dataset 'mnist' from https://example.org/mnist: " + "x" * 400 + ". " + advice
    nb = new_notebook(cells=[new_code_cell("load('mnist')", outputs=[
        nbformat.v4.new_output("error", ename="OfflineError", evalue=message, traceback=[])])])
    error = _first_error(nb)
    assert error.startswith("cell 0: OfflineError: Could not download dataset 'mnist'")
    assert error.endswith(advice)
    print_table([RunResult("01_deep_learning/02_pytorch_fundamentals.ipynb", "laptop", 3.2, error)])
    table = " ".join(capsys.readouterr().out.split())  # the table wraps long lines
    assert "FAILED" in table and advice in table
    huge = _first_error(new_notebook(cells=[new_code_cell("", outputs=[nbformat.v4.new_output(
        "error", ename="ValueError", evalue="y" * 5000 + " " + advice, traceback=[])])]))
    assert len(huge) < 1100 and huge.endswith(advice)  # a huge error loses its middle, not its advice


def test_run_preset_default_comes_from_the_environment_then_dotenv(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("COURSE_PRESET", raising=False)
    monkeypatch.setenv("COURSE_DOTENV", str(tmp_path / "none.env"))
    assert _parser().parse_args(["run", "x.ipynb"]).preset == "smoke"
    (tmp_path / "course.env").write_text("COURSE_PRESET=laptop\n", encoding="utf-8")
    monkeypatch.setenv("COURSE_DOTENV", str(tmp_path / "course.env"))
    assert _parser().parse_args(["run", "x.ipynb"]).preset == "laptop"
    monkeypatch.setenv("COURSE_PRESET", "full")
    assert _parser().parse_args(["run", "x.ipynb"]).preset == "full"


def test_times_rewrites_readme_row_and_run_time_line(course: Path, tmp_path: Path) -> None:
    times_file = tmp_path / "times.json"
    times = {NB: {"smoke": {"seconds": 9.4, "date": "2025-01-01", "machine": "2 CPU cores"},
                  "laptop": {"seconds": 130.2, "date": "2025-01-01", "machine": "2 CPU cores"}}}
    times_file.write_text(json.dumps(times), encoding="utf-8")
    argv = ["--root", str(tmp_path), "times", "--times-file", str(times_file)]
    assert main([*argv, "--check"]) == 1
    assert main(argv) == 0
    readme = (tmp_path / "00_demo" / "README.md").read_text(encoding="utf-8")
    assert "| 01 | [Demo](01_demo.ipynb) | practise | none | 9 s | 2 min 10 s | — |" in readme
    line = nbs.read_notebook(course).cells[1].source
    assert line == ("**Run time** (measured on 2 CPU cores; full on a GPU): "
                    "smoke 9 s · laptop 2 min 10 s · full not measured")
    assert main([*argv, "--check"]) == 0


@pytest.mark.parametrize(("seconds", "text"), [(None, None), (0.2, "1 s"), (9.4, "9 s"), (59.4, "59 s"),
                                               (60, "1 min 0 s"), (130.2, "2 min 10 s")])
def test_format_seconds(seconds: float | None, text: str | None) -> None:
    assert nbs.format_seconds(seconds) == text


def test_bad_preset_is_a_clear_error(capsys) -> None:
    with pytest.raises(ValueError, match="'big' is not one of: smoke, laptop, full"):
        check_preset("big")
    with pytest.raises(SystemExit):
        main(["run", "--preset", "big", "--all"])
    assert "invalid choice: 'big' (choose from 'smoke', 'laptop', 'full')" in capsys.readouterr().err
    assert main(["run", "no/such.ipynb"]) == 2
    assert "no such notebook: no/such.ipynb" in capsys.readouterr().err


def test_list_prints_titles(course: Path, tmp_path: Path, capsys) -> None:
    assert main(["--root", str(tmp_path), "list"]) == 0
    assert f"{NB}  00.01 · Demo" in capsys.readouterr().out


def test_a_new_release_replaces_the_old_one_and_never_overwrites_other_folders(course: Path, tmp_path: Path,
                                                                                 capsys) -> None:
    out = tmp_path / "student"
    assert main(["--root", str(tmp_path), "release", "--out", str(out)]) == 0
    stale = out / "00_demo" / "02_removed_since.ipynb"  # a notebook the course no longer has
    stale.write_text("{}", encoding="utf-8")
    assert main(["--root", str(tmp_path), "release", "--out", str(out)]) == 0
    assert not stale.exists() and (out / NB).is_file()
    other = tmp_path / "my_work"
    other.mkdir()
    (other / "notes.txt").write_text("mine", encoding="utf-8")
    assert main(["--root", str(tmp_path), "release", "--out", str(other)]) == 2
    assert "is a folder that is not a student release" in capsys.readouterr().err
    assert (other / "notes.txt").read_text(encoding="utf-8") == "mine" and len(list(other.iterdir())) == 1


def test_times_without_a_times_file_refuses_instead_of_wiping_the_published_times(course: Path,
                                                                                   tmp_path: Path, capsys) -> None:
    readme = (tmp_path / "00_demo" / "README.md").read_text(encoding="utf-8")
    assert main(["--root", str(tmp_path), "times", "--times-file", str(tmp_path / "missing.json")]) == 2
    assert "no recorded times at" in capsys.readouterr().err
    assert (tmp_path / "00_demo" / "README.md").read_text(encoding="utf-8") == readme
