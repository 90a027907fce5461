"""Self-checks kept out of sight: the student release stores each one in a file and runs it from there.

In the course every exercise's solution cell is followed by a self-check cell, whose code holds the answer
in plain sight: a reference implementation and a `hint=` that may spell it out. In the student release
(`python -m utils.course release`, utils/student.py) that cell becomes

    from utils.stored_checks import run_self_check

    run_self_check("00_prerequisites/02_numpy", 1)  # checks standardise; ...

and its code moves, unchanged, to utils/self_checks/00_prerequisites/02_numpy.py, one `# %% self-check N`
section per check. `run_self_check` runs that code in the notebook's own namespace, exactly as the cell
did, so it sees the student's answer and every name the notebook made. If the check fails, the message
gives the fuller hint and says where the check's code (its reference answer included) can be read.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from utils.checks import CheckFailed

CHECKS_DIR = "self_checks"  # next to this module in a release: utils/self_checks/<module>/<notebook>.py
SECTION = re.compile(r"^# %% self-check (\d+)\b")
# A check cell calls one of utils.checks' check_* functions (tests/test_notebook_conventions.py).
CALLS_A_CHECK = re.compile(r"\bcheck_\w+\(")


# --- writing, at release time ----------------------------------------------------------------------


def checked_names(solution: str) -> list[str]:
    """The names a solution cell defines at its top level (functions, classes, assigned names)."""
    names = []
    for node in ast.parse(solution).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                elts = target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]
                names += [t.id for t in elts if isinstance(t, ast.Name)]
    return list(dict.fromkeys(names))


def run_cell(notebook: str, number: int, names: list[str]) -> str:
    """The source of the release's self-check cell that runs stored check `number` of `notebook`."""
    what = f"checks {', '.join(names)}" if names else "checks your answer"
    return (f"from utils.stored_checks import run_self_check\n\n"
            f"run_self_check(\"{notebook}\", {number})  # {what}; a fuller hint appears only if it fails")


def checks_file(notebook: str, checks: list[tuple[str, str]]) -> str:
    """The text of utils/self_checks/<notebook>.py: one `# %% self-check N` section per (label, source)."""
    parts = [f'"""The self-checks of {notebook}.ipynb (student release): they hold the reference answers.\n\n'
             f"The notebook runs section N with run_self_check(\"{notebook}\", N), in its own namespace.\n"
             f'Read a section once you have tried: it shows one way to the answer.\n"""\n']
    for number, (label, source) in enumerate(checks, start=1):
        if any(SECTION.match(line) for line in source.splitlines()):
            raise ValueError(f"{notebook}, self-check {number}: a line of it starts like a section marker "
                             f"('# %% self-check N'); reword that comment.")
        parts.append(f"\n# %% self-check {number}: {label}\n{source.rstrip()}\n")
    return "".join(parts)


# --- reading and running, in the student's notebook -------------------------------------------------


def _files(notebook: str) -> list[Path]:
    """Where the checks of `notebook` may be: next to this module, or in the release around the notebook.

    The second place serves a kernel whose `utils` is not the release's own (the course's, installed with
    `pip install -e .`): its working folder is the notebook's, <release>/<module>/.
    """
    if not re.fullmatch(r"0\d_[\w-]+/\d\d_[\w-]+", notebook):
        raise ValueError(f"notebook {notebook!r} is not a course notebook name such as '00_prerequisites/02_numpy'.")
    here = Path(__file__).resolve().parent
    folders = [here, *(p / "utils" for p in [Path.cwd(), *Path.cwd().parents][:3])]
    return [folder / CHECKS_DIR / f"{notebook}.py" for folder in folders]


def load_check(notebook: str, number: int) -> tuple[str, int, Path]:
    """(source, first line, file) of stored self-check `number` (1, 2, ...) of `notebook`."""
    files = _files(notebook)
    path = next((f for f in files if f.is_file()), None)
    if path is None:
        raise FileNotFoundError(f"no stored self-checks for {notebook}: looked for {', '.join(map(str, files))}. "
                                "They come with the student release's own utils: open the notebook from the "
                                "release folder (`make lab-student` in the course, `make lab` in the release).")
    lines = path.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if SECTION.match(line)]
    for k, start in enumerate(starts):
        if int(SECTION.match(lines[start])[1]) == number:
            end = starts[k + 1] if k + 1 < len(starts) else len(lines)
            return "\n".join(lines[start + 1:end]).rstrip() + "\n", start + 2, path
    raise ValueError(f"{path} has no self-check {number}; it has {len(starts)} (numbered from 1).")


def _where(notebook: str, number: int, path: Path) -> str:
    """The line a failure ends with: where the check's code is, and how to print it."""
    shown = Path(*path.parts[-4:]).as_posix()  # utils/self_checks/<module>/<notebook>.py
    return (f"\n  The check's code, its reference answer included, is self-check {number} of {shown}; "
            f"show_self_check(\"{notebook}\", {number}) prints it.")


def _hints(source: str) -> str:
    """The `hint=` texts written in a check's code, as the lines a failure message ends with."""
    hints = [kw.value.value for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)
             for kw in node.keywords if kw.arg == "hint" and isinstance(kw.value, ast.Constant)]
    return "".join(f"\n  Hint: {h}" for h in dict.fromkeys(hints))


def _execute(source: str, first_line: int, path: Path, namespace: dict) -> None:
    """Run `source` in `namespace` as a notebook cell would, its last expression displayed if not None."""
    tree = ast.parse(source, filename=str(path))
    ast.increment_lineno(tree, first_line - 1)  # tracebacks point at the right line of the file
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, str(path), "exec"), namespace)  # noqa: S102 (the course's own check code)
    if last is not None:
        value = eval(compile(ast.Expression(last.value), str(path), "eval"), namespace)  # noqa: S307
        if value is not None:
            from IPython.display import display  # only reached inside a notebook kernel, as a cell would

            display(value)


def run_self_check(notebook: str, number: int, namespace: dict | None = None) -> None:
    """Run stored self-check `number` of `notebook` in the caller's namespace (the notebook's globals).

    A failed check raises CheckFailed with its message and fuller hint, and says where its code is; an
    exercise left as a stub fails the same way. Any other error is the answer's to fix: it is raised as it
    is, with a note saying where the check's code is, since its traceback passes through that code.
    """
    __tracebackhide__ = True  # IPython leaves this frame out of the traceback: the student's cell is what matters
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ValueError(f"number must be a self-check number 1, 2, ...; got {number!r}.")
    namespace = sys._getframe(1).f_globals if namespace is None else namespace
    source, first_line, path = load_check(notebook, number)
    try:
        _execute(source, first_line, path, namespace)
    except AssertionError as error:  # CheckFailed, or a plain assert of the check: its text, no traceback
        raise CheckFailed(f"{error}{_where(notebook, number, path)}") from None
    except NotImplementedError as error:  # the stub was called outside a check_* function
        quoted = f"\n  It says: {error}" if str(error) else ""
        raise CheckFailed("the exercise is not implemented yet: its cell still raises NotImplementedError."
                          + quoted + _hints(source) + _where(notebook, number, path)) from None
    except Exception as error:
        error.add_note(f"(raised while running self-check {number} of {notebook}; an answer still `...` "
                       f"or a function that returns the wrong kind of value are the usual causes)")
        raise


def show_self_check(notebook: str, number: int) -> None:
    """Print the code of stored self-check `number` of `notebook`: to compare once you have tried."""
    source, _, path = load_check(notebook, number)
    print(f"# self-check {number} of {notebook} ({path})\n{source}")
