"""The student release: every `solution` cell becomes a stub, and the folder becomes a course of its own.

A stub is cut from the author's own source text, not regenerated from the syntax tree, so the signature
(line breaks, spacing, defaults, annotations, decorators) and the docstring read exactly as the author
wrote them; only the body becomes `raise NotImplementedError(hint)`. The self-check cell after it, whose code
shows the answer, becomes one call of `run_self_check`, its code moved to utils/self_checks/ (see
utils/stored_checks.py). `python -m utils.course release`
(utils/course.py) writes the notebooks; the functions at the end of this module add what a student needs
around them: the `utils` package, the install files, a Makefile and a README written for students.
"""

from __future__ import annotations

import ast
import io
import re
import shutil
import string
import tokenize
from pathlib import Path

import nbformat

from utils import notebooks as nbs
from utils import stored_checks

TEMPLATES = Path(__file__).resolve().parent / "templates" / "student"
# Copied as they are. benchmarks/char_gpt.py is linked from 02_transformers/README.md (train the GPT of 02.05
# on any text); the rest of benchmarks/ times the course and is for its authors.
COURSE_FILES = ("LICENSE", "pyproject.toml", "requirements.txt", "environment.yml", ".env.example",
                ".gitignore", "benchmarks/char_gpt.py")
Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
# The course Makefile's targets that are for its authors: the student Makefile leaves them out.
AUTHOR_TARGETS = {"help", "test", "release", "lab-student", "stamp", "times", "benchmark", ".PHONY"}
# A rule's first line, `targets: prerequisites`, but not a variable (`X := 1`, `X ::= 1`) or a recipe line.
MAKE_RULE = re.compile(r"([^\s#:=][^:=]*?)\s*:(?![:=])")


# --- stubs, cut from the author's text -------------------------------------------------------------


def _header(lines: list[str], node: Definition) -> list[str]:
    """The lines of a def or class header as written, decorators included, ending at its colon."""
    first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    rest = io.StringIO("\n".join(lines[node.lineno - 1:]) + "\n")
    depth = 0
    for token in tokenize.generate_tokens(rest.readline):
        if token.type == tokenize.OP and token.string in "([{":
            depth += 1
        elif token.type == tokenize.OP and token.string in ")]}":
            depth -= 1
        elif token.type == tokenize.OP and token.string == ":" and depth == 0:
            # The first colon outside brackets ends the header (a lambda default or `dict[str, int]` sits
            # inside brackets). Whatever follows on that line, a comment or a one-line body, is left out.
            row, col = node.lineno + token.start[0] - 2, token.start[1]
            return lines[first - 1:row] + [lines[row][:col + 1]]
    raise ValueError(f"line {node.lineno}: the header of {node.name!r} has no closing ':'.")  # ast parsed it


def _indent(text: str) -> str:
    return text[:len(text) - len(text.lstrip())]


def _body_indent(lines: list[str], node: Definition) -> str:
    """The indentation of the body: as written, or four spaces more than the header for `def f(): ...`."""
    body_line = lines[node.body[0].lineno - 1]
    header_line = lines[node.lineno - 1]
    if node.body[0].lineno > node.lineno and len(_indent(body_line)) > len(_indent(header_line)):
        return _indent(body_line)
    return _indent(header_line) + "    "


def _cut(line: str, start: int = 0, end: int | None = None) -> str:
    """`line[start:end]` for ast's column offsets, which count UTF-8 bytes, not characters."""
    return line.encode()[start:end].decode()


def _docstring(lines: list[str], node: Definition, indent: str) -> list[str]:
    """The docstring lines exactly as written (none if there is no docstring)."""
    if ast.get_docstring(node, clean=False) is None:
        return []
    doc = node.body[0]
    text = lines[doc.lineno - 1:doc.end_lineno]
    text[-1] = _cut(text[-1], 0, doc.end_col_offset)  # a comment after the closing quotes stays out
    text[0] = indent + _cut(text[0], doc.col_offset)  # a docstring on the header line moves to its own line
    return text


def _stub_def(lines: list[str], node: Definition, hint: str) -> list[str]:
    """Header and docstring of a def (whose body raises) or of a class (whose methods are stubbed)."""
    indent = _body_indent(lines, node)
    docstring = _docstring(lines, node, indent)
    if not isinstance(node, ast.ClassDef):
        return _header(lines, node) + docstring + [f"{indent}raise NotImplementedError({hint!r})"]
    # A class body that raised would fail already when the exercise cell runs; the student should meet
    # the error at the check, so the class stays and its methods raise instead.
    methods = [m for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
    body = [line for method in methods for line in ["", *_stub_def(lines, method, hint)]]
    if not docstring and not methods:
        body = [f"{indent}pass"]
    return _header(lines, node) + docstring + (body[1:] if not docstring else body)


def _stub_assignment(source: str, node: ast.Assign | ast.AnnAssign) -> str | None:
    """`name = ...  # your answer`; a tuple target gets one `...` per name so that it still unpacks."""
    target = node.targets[0] if isinstance(node, ast.Assign) else node.target
    written = ast.get_source_segment(source, target)
    if isinstance(node, ast.AnnAssign):
        return f"{written}: {ast.get_source_segment(source, node.annotation)} = ...  # your answer"
    if isinstance(target, (ast.Tuple, ast.List)):
        return f"{written} = {', '.join(['...'] * len(target.elts))}  # your answer"
    if isinstance(target, ast.Name):
        return f"{written} = ...  # your answer"
    return None  # `x.attr = ...` or `x[0] = ...` changes an object; there is no name to hand back


def _hint_lines(source: str, where: str) -> list[str]:
    """The `# Hint:` line and the comment lines that continue it, as written."""
    lines = [line.strip() for line in source.splitlines()]
    starts = [i for i, line in enumerate(lines) if line.startswith("# Hint:")]
    if not starts:
        raise ValueError(f"{where}: a solution cell needs a '# Hint: ...' comment line; found none.")
    end = starts[0] + 1
    while end < len(lines) and lines[end].startswith("#") and not lines[end].startswith("# Hint:"):
        end += 1
    return lines[starts[0]:end]


def stub_solution(source: str, where: str) -> str:
    """The student version of a solution cell: the hint, imports, signatures and docstrings as written."""
    hint_lines = _hint_lines(source, where)
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ValueError(f"{where}: the solution cell does not parse (line {err.lineno}: {err.msg}).") from err
    hint = " ".join(line.lstrip("#").strip() for line in hint_lines).removeprefix("Hint:").strip()
    lines = source.split("\n")  # as ast counts lines (splitlines() would also split at \f or \u2028)
    parts = ["# Exercise: write your solution here.", *hint_lines]
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            parts.append(ast.get_source_segment(source, node))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            parts += ["", *_stub_def(lines, node, hint), ""]  # blank lines around a def, as PEP 8 asks
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and (line := _stub_assignment(source, node)):
            parts.append(line)
        # everything else (prints, loops, plots) is the student's to write
    kept = [p for i, p in enumerate(parts) if p or (i and parts[i - 1])]  # no double blank lines
    return "\n".join(kept).strip() + "\n"


def _check_cell(nb: nbformat.NotebookNode, solution: int, where: str) -> int:
    """The index of the self-check cell of the solution at `solution`: the next code cell, calling check_*."""
    index = next((i for i in range(solution + 1, len(nb.cells)) if nb.cells[i].cell_type == "code"), None)
    if index is None or not stored_checks.CALLS_A_CHECK.search(nb.cells[index].source):
        raise ValueError(f"{where}, cell {solution}: a solution cell must be followed by its self-check, a code "
                         "cell that calls a check_* function of utils.checks; found none.")
    return index


def student_notebook(nb: nbformat.NotebookNode, where: str,
                     url: str) -> tuple[nbformat.NotebookNode, list[tuple[str, str]]]:
    """A copy of `nb` for students, and the self-checks moved out of it as (label, source) pairs.

    Every `solution` cell becomes a stub tagged `exercise`; the self-check cell after it becomes one call of
    utils.stored_checks.run_self_check, its code kept for utils/self_checks/ (it shows the answer). Outputs
    are cleared; the Colab install block installs `utils` from the student branch of the repository at `url`.
    """
    nb = nbformat.from_dict(nb)  # a deep copy: the author's notebook object is left alone
    nbs.stamp_notebook(nb, where, url, nbs.STUDENT_BRANCH)
    name, checks = where.removesuffix(".ipynb"), []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        tags = nbs.cell_tags(cell)
        if "solution" in tags:
            stub = stub_solution(cell.source, f"{where}, cell {index}")  # first: it names a cell that won't parse
            check = nb.cells[_check_cell(nb, index, where)]
            names = stored_checks.checked_names(cell.source)
            checks.append((f"checks {', '.join(names) or 'the answer'}", check.source))
            check.source = stored_checks.run_cell(name, len(checks), names)
            cell.source = stub
            cell.metadata["tags"] = [t for t in tags if t != "solution"] + ["exercise"]
    return nb, checks


# --- the rest of the release: a course a student can open -------------------------------------------


def _copy_if_changed(source: Path, target: Path) -> None:
    """Copy one file, leaving an identical target untouched (same bytes, same modification time)."""
    if target.is_file() and target.read_bytes() == source.read_bytes():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def copy_course_files(root: Path, out: Path) -> None:
    """Copy the module READMEs, the `utils` package and COURSE_FILES (those that exist) into `out`."""
    files = [*nbs.module_readmes(root), *(root / name for name in COURSE_FILES)]
    utils = root / "utils"
    if utils.is_dir():  # the release templates stay behind: they are for building a release, not using one
        files += [p for p in sorted(utils.rglob("*")) if p.is_file() and "__pycache__" not in p.parts
                  and p.relative_to(utils).parts[0] != "templates"]
    for path in files:
        if path.is_file():
            _copy_if_changed(path, out / path.relative_to(root))


def _module_table(out: Path) -> str:
    """One Markdown table row per released module: its README's title, linked, and its notebook count."""
    rows = ["| module | notebooks |", "|---|---|"]
    for readme in nbs.module_readmes(out):
        title = readme.read_text(encoding="utf-8").splitlines()[0].lstrip("# ").split(" — ")[0]
        count = len(list(readme.parent.glob("[0-9][0-9]_*.ipynb")))
        rows.append(f"| [{title}]({readme.parent.name}/README.md) | {count or 'coming'} |")
    return "\n".join(rows)


def _links(url: str) -> dict[str, str]:
    """The addresses the student README names: this edition on GitHub, and the course with its solutions."""
    return {"branch": nbs.STUDENT_BRANCH, "solutions": f"{url}/tree/{nbs.SOLUTIONS_BRANCH}",
            "edition": f"{url}/tree/{nbs.STUDENT_BRANCH}"}


def student_makefile(course: str, template: str) -> str:
    """The course Makefile without its opening comment and its AUTHOR_TARGETS, put into `template`.

    So `make lab` in the release installs and opens exactly as in the course, whatever the course Makefile
    does; the template adds the student's `help`, `check` and `test`.
    """
    lines = course.splitlines()
    while lines and (not lines[0].strip() or lines[0].startswith("#")):
        lines.pop(0)  # the course's own introduction: it talks about `make test`
    kept, comments, dropping, continued = [], [], False, False
    for line in lines:
        if line.startswith("#") and not continued:  # a comment belongs to what follows it
            comments.append(line)
            continue
        rule = None if continued or line.startswith((" ", "\t")) else MAKE_RULE.match(line)
        if rule:
            dropping = bool(set(rule[1].split()) & AUTHOR_TARGETS)
        elif not continued and not line.startswith("\t"):
            dropping = False  # a variable or a blank line ends the rule
        if not dropping:
            kept += comments + [line]
        comments, continued = [], line.endswith("\\")
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    return template.replace("@COURSE_MAKEFILE@", text)


def write_student_files(root: Path, out: Path, url: str) -> None:
    """Write the student README.md and Makefile into `out` (templates in utils/templates/student/)."""
    readme = string.Template((TEMPLATES / "README.md").read_text(encoding="utf-8"))
    text = readme.substitute(modules=_module_table(out), **_links(url))
    nbs.write_if_changed(out / "README.md", text)
    course = root / "Makefile"
    if course.is_file():
        template = (TEMPLATES / "Makefile").read_text(encoding="utf-8")
        makefile = student_makefile(course.read_text(encoding="utf-8"), template)
        nbs.write_if_changed(out / "Makefile", makefile)
