"""The course's notebooks as files: find, read, write with stable cell ids, stamp the shared parts.

`python -m utils.course` is the command line on top of this module. The parts every notebook shares
(the "Open in Colab" badge and the Colab install block of the setup cell) are written here, from one
template, so that a change of repository or install line is one edit plus `python -m utils.course stamp`.
Every write keeps the cells' ids; a cell without one gets an id derived from its content, so writing a
notebook again gives the same bytes. Build notebooks in code? Write them with `save_notebook`.
The student copies (solutions become stubs) are made in utils/student.py.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib.metadata
import json
import re
import sys
import tomllib
import types
from pathlib import Path

import nbformat

from utils.runtime import PRESETS, repo_root

PACKAGE = "genai-course-utils"
MODULE_GLOB = "0[0-5]_*"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
# The two editions of every notebook on GitHub, each opened in Colab by its own badge: the course itself
# (solutions included) on main, and the student release (utils/student.py), published by a workflow to the
# branch STUDENT_BRANCH of the same repository, its root the contents of build/student.
SOLUTIONS_BRANCH = "main"
STUDENT_BRANCH = "student"
SETUP_BEGIN = "# --- course setup (stamped by `python -m utils.course stamp`; edit utils/notebooks.py, not here) ---"
SETUP_END = "# --- end course setup ---"
# nbformat 4.5: a cell id is 1-64 letters, digits, "-" or "_", unique within its notebook.
CELL_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
# "**Run time** (measured on ...): <times>" -> group 1 is kept, group 2 (the times) is rewritten.
RUNTIME_LINE = re.compile(r"^(\*\*Run time:?\*\*(?:\s*\([^)\n]*\))?\s*:?)(.*)$", re.MULTILINE)

# The stamped block. Locally (and in CI) it does nothing: the course is installed with `pip install -e .`.
# On Colab it installs the helpers plus what Colab lacks; torch is never reinstalled (Colab's matches its GPU).
SETUP_TEMPLATE = '''{begin}
import sys

if "google.colab" in sys.modules:  # on Colab only: install the course helpers (never torch)
    import importlib, subprocess

    course = "genai-course-utils[colab] @ git+{url}{ref}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", course], check=True)
    importlib.invalidate_caches()  # let this running kernel see the new packages
{end}'''


# --- a notebook's from-scratch code, for the reference tests ---------------------------------------

def _is_constant(node: ast.stmt) -> bool:
    """`NAME = <expression without calls>`: a table of functions or numbers, safe to re-run anywhere."""
    if not isinstance(node, ast.Assign):
        return False
    names = [n for t in node.targets for n in (t.elts if isinstance(t, ast.Tuple) else [t])]  # PAD, BOS = 0, 1
    if not all(isinstance(n, ast.Name) and n.id.isupper() for n in names):
        return False
    return not any(isinstance(n, (ast.Call, ast.Await, ast.Yield)) for n in ast.walk(node.value))


def notebook_definitions(path: Path | str, *, solutions: bool = False) -> dict[str, object]:
    """The functions and classes a notebook defines, without running the notebook.

    Executes only the top-level imports, `def`s, `class`es and UPPER_CASE constants without calls of every
    code cell (cells tagged `solution` only if `solutions=True`), in cell order, and returns the namespace.
    Tests in tests/reference/ use it to check a notebook's from-scratch code against the library, and the
    utils version of a promoted model against the notebook's. Nothing is trained, loaded or printed.
    A definition that needs the running notebook's variables (a default argument, a base class made
    in a cell) is left out and listed in the namespace's `__skipped__`.
    """
    path = Path(path)
    kept: list[ast.stmt] = []
    for cell in read_notebook(path).cells:
        if cell.cell_type != "code" or ("solution" in cell_tags(cell) and not solutions):
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        kept += [node for node in ast.parse(source, filename=str(path)).body
                 if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef))
                 or _is_constant(node)]
    module = types.ModuleType(f"notebook_{path.parent.name}_{path.stem}")  # a real module: dataclasses need one
    sys.modules[module.__name__] = module
    skipped = module.__dict__.setdefault("__skipped__", {})  # definitions that need the notebook's state
    for node in kept:
        try:
            exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), module.__dict__)  # noqa: S102
        except NameError as error:  # e.g. a default argument that is a variable of the running notebook
            skipped[getattr(node, "name", ast.unparse(node)[:40])] = str(error)
    return module.__dict__



# --- reading and writing -------------------------------------------------------------------------


def find_notebooks(root: Path) -> list[Path]:
    """Every course notebook `0[0-5]_*/NN_name.ipynb` under `root`, sorted, checkpoints skipped."""
    return sorted(p for p in root.glob(f"{MODULE_GLOB}/*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def module_readmes(root: Path) -> list[Path]:
    """The README.md of every module folder under `root`, sorted."""
    return sorted(p for p in root.glob(f"{MODULE_GLOB}/README.md") if p.is_file())


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read a notebook as nbformat v4.5; a cell without an id, or with a repeated one, gets a derived id."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("nbformat") == 4:  # before nbformat sees it: it would invent random ids
        data["nbformat_minor"] = max(5, data.get("nbformat_minor", 0))
        stable_cell_ids(data["cells"])
    return nbformat.reads(json.dumps(data), as_version=4)


def notebook_text(nb: nbformat.NotebookNode) -> str:
    """The notebook serialised the way Jupyter writes it (indent 1, trailing newline), every cell with an id."""
    nb = nbformat.from_dict(nb)  # a copy: the caller's notebook is left as it is
    nb.nbformat_minor = max(5, nb.get("nbformat_minor", 0))
    stable_cell_ids(nb.cells)
    return nbformat.writes(nb) + "\n"


def save_notebook(nb: nbformat.NotebookNode, path: Path) -> bool:
    """Write a notebook built in code (`new_code_cell` ...) to `path`; True if the file changed.

    nbformat gives every new cell a random id, so a notebook generated twice would differ in every cell.
    Here the ids of `nb` are ignored: a cell that was already in the file keeps the id it has there, and
    a new cell gets an id derived from its content. Generating the same notebook twice writes the same bytes.
    """
    nb = nbformat.from_dict(nb)
    old = read_notebook(path).cells if Path(path).is_file() else []
    for cell in nb.cells:
        cell.pop("id", None)
    for i, j in _same_cells(old, nb.cells):
        nb.cells[j]["id"] = old[i]["id"]
    return write_if_changed(Path(path), notebook_text(nb))


# --- cell ids: stable, so that regenerating or re-running a notebook leaves quiet diffs -------------


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _same_cells(old: list[dict], new: list[dict]) -> list[tuple[int, int]]:
    """Pairs (i, j): new[j] is old[i], unchanged or edited in place (same type, same position in a run)."""
    keys = [[(c["cell_type"], _source(c)) for c in cells] for cells in (old, new)]
    pairs = []
    matcher = difflib.SequenceMatcher(None, keys[0], keys[1], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("equal", "replace"):  # "replace": cells edited where they stand keep their ids
            pairs += [(i, j) for i, j in zip(range(i1, i2), range(j1, j2))
                      if old[i]["cell_type"] == new[j]["cell_type"]]
    return pairs


def stable_cell_ids(cells: list[dict]) -> None:
    """Give every cell without a valid, unique id one derived from its type and source (in place).

    The first cell holding an id keeps it. A derived id is the first 8 hex digits of a SHA-256 of the cell,
    so it is the same on every machine and every run, and does not move when other cells are inserted.
    """
    taken, missing = set(), []
    for cell in cells:
        cell_id = cell.get("id")
        if isinstance(cell_id, str) and CELL_ID.fullmatch(cell_id) and cell_id not in taken:
            taken.add(cell_id)
        else:
            missing.append(cell)
    for cell in missing:
        text, n = f"{cell['cell_type']}\n{_source(cell)}", 0
        while (cell_id := hashlib.sha256(f"{text}\n{n}".encode()).hexdigest()[:8]) in taken:
            n += 1  # the same content twice (or a clash): count on
        cell["id"] = cell_id
        taken.add(cell_id)


def write_if_changed(path: Path, text: str) -> bool:
    """Write `text` to `path` only if it differs from what is there; True if it was written."""
    # Untouched files keep their modification time, so `git status` shows only real changes.
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True


def relative_name(path: Path, root: Path) -> str:
    """`path` relative to `root` with forward slashes (how times.json and badges name a notebook)."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name  # a notebook outside the course: its file name is all we can say


def cell_tags(cell: nbformat.NotebookNode) -> list[str]:
    """The tags of a cell (an empty list when it has none)."""
    return list(cell.get("metadata", {}).get("tags", []))


def notebook_title(nb: nbformat.NotebookNode) -> str:
    """The first `#` heading of cell 0, e.g. '00.00 · Start here'."""
    if nb.cells:
        for line in nb.cells[0].source.splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return "(no title)"


# --- the repository URL: one place, pyproject.toml -----------------------------------------------


def repository_url(pyproject: Path | None = None) -> str:
    """`[project.urls] Repository` of pyproject.toml, from the installed metadata or the file itself."""
    if pyproject is None:
        try:
            # Works for normal and editable installs: "Project-URL: Repository, https://...".
            for entry in importlib.metadata.metadata(PACKAGE).get_all("Project-URL") or []:
                label, _, url = entry.partition(",")
                if label.strip().lower() == "repository":
                    return url.strip().rstrip("/")
        except importlib.metadata.PackageNotFoundError:
            pass
        pyproject = repo_root() / "pyproject.toml"
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    url = data.get("project", {}).get("urls", {}).get("Repository")
    if not url:
        raise ValueError(f"{pyproject} has no [project.urls] Repository; add the GitHub URL there.")
    return url.rstrip("/")


def github_slug(url: str) -> str:
    """'owner/repo' of a GitHub URL such as https://github.com/owner/repo(.git)."""
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", url)
    if not match:
        raise ValueError(f"Repository URL {url!r} is not https://github.com/<owner>/<repo>; Colab needs GitHub.")
    return f"{match[1]}/{match[2]}"


def colab_link(relative_path: str, url: str, branch: str = SOLUTIONS_BRANCH) -> str:
    """The Colab address that opens the notebook `relative_path` of `branch` in the repository at `url`."""
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)*", branch):
        raise ValueError(f"branch {branch!r} is not a git branch name such as 'main' or 'student'.")
    return f"https://colab.research.google.com/github/{github_slug(url)}/blob/{branch}/{relative_path}"


def badge_line(relative_path: str, url: str) -> str:
    """The two 'Open in Colab' badges of a notebook: its exercises (student branch) and its solutions (main)."""
    exercises, solutions = (colab_link(relative_path, url, b) for b in (STUDENT_BRANCH, SOLUTIONS_BRANCH))
    return (f"Open in Colab: [![Open the exercises in Colab]({BADGE_IMAGE})]({exercises}) exercises · "
            f"[![Open the solutions in Colab]({BADGE_IMAGE})]({solutions}) solutions")


def setup_block(url: str, branch: str = SOLUTIONS_BRANCH) -> str:
    """The stamped top of every setup cell: on Colab it installs `utils` from `branch` of the repository."""
    colab_link("x.ipynb", url, branch)  # the same checks of url and branch as the badges
    ref = "" if branch == SOLUTIONS_BRANCH else f"@{branch}"  # main is the default branch: no ref needed
    return SETUP_TEMPLATE.format(begin=SETUP_BEGIN, end=SETUP_END, url=url, ref=ref)


# --- stamping ------------------------------------------------------------------------------------


def _stamp_badge(cell: nbformat.NotebookNode, badge: str, where: str) -> None:
    if cell.cell_type != "markdown":
        raise ValueError(f"{where}: cell 0 must be the markdown title cell; it is a {cell.cell_type} cell.")
    lines = cell.source.splitlines()
    spots = [i for i, line in enumerate(lines) if "colab-badge.svg" in line]
    if spots:
        lines[spots[0]] = badge
    else:
        lines += ["", badge] if lines else [badge]
    cell.source = "\n".join(lines)


def _stamp_setup(cell: nbformat.NotebookNode, block: str, where: str) -> None:
    lines = cell.source.splitlines()
    if SETUP_BEGIN in lines:
        start = lines.index(SETUP_BEGIN)
        if SETUP_END not in lines[start:]:
            raise ValueError(f"{where}: the setup cell has {SETUP_BEGIN!r} but no {SETUP_END!r} after it.")
        end = lines.index(SETUP_END, start)
        rest = lines[:start] + lines[end + 1:]
    else:
        rest = lines
    while rest and not rest[0].strip():  # one blank line between block and the author's imports
        rest.pop(0)
    cell.source = block + ("\n\n" + "\n".join(rest) if rest else "")


def stamp_notebook(nb: nbformat.NotebookNode, relative_path: str, url: str,
                   branch: str = SOLUTIONS_BRANCH) -> nbformat.NotebookNode:
    """Set the badges in cell 0 and the setup block of the `setup` cell (in place); returns `nb`.

    `branch` is the edition the notebook belongs to: its setup block installs `utils` from that branch
    (the student release's `utils` holds its stored self-checks, utils/stored_checks.py).
    """
    if not nb.cells:
        raise ValueError(f"{relative_path}: the notebook has no cells.")
    _stamp_badge(nb.cells[0], badge_line(relative_path, url), relative_path)
    setup = [c for c in nb.cells if c.cell_type == "code" and "setup" in cell_tags(c)]
    if len(setup) != 1:
        raise ValueError(f"{relative_path}: needs exactly one code cell tagged 'setup'; found {len(setup)}.")
    _stamp_setup(setup[0], setup_block(url, branch), relative_path)
    return nb


# --- measured run times, as the READMEs and notebooks show them -----------------------------------


def format_seconds(seconds: float | None) -> str | None:
    """'9 s' under a minute, '2 min 10 s' above; None when not measured."""
    if seconds is None:
        return None
    whole = max(1, round(seconds))
    return f"{whole} s" if whole < 60 else f"{whole // 60} min {whole % 60} s"


def preset_times(entry: dict) -> list[str | None]:
    """The formatted smoke, laptop and full times of one notebook's entry of times.json."""
    return [format_seconds(entry.get(p, {}).get("seconds")) for p in PRESETS]


def runtime_text(entry: dict) -> str:
    """'smoke 9 s · laptop 10 s · full not measured' for one notebook's entry of times.json."""
    return " · ".join(f"{p} {t or 'not measured'}" for p, t in zip(PRESETS, preset_times(entry)))


def update_readme(text: str, times: dict[str, dict], module: str) -> str:
    """Rewrite the last three cells (smoke, laptop, full) of every table row that links a notebook."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        match = re.search(r"\]\((?:\./)?([^)/]+\.ipynb)\)", line)
        if not line.lstrip().startswith("|") or not match:
            continue
        cells = line.rstrip().split("|")  # ['', ' 00 ', ' [Title](x.ipynb) ', ..., ' full ', '']
        if len(cells) < 6 or cells[-1].strip():
            raise ValueError(f"{module}/README.md: the row for {match[1]} needs '| ... | smoke | laptop | full |'.")
        values = preset_times(times.get(f"{module}/{match[1]}", {}))
        cells[-4:-1] = [f" {v or '—'} " for v in values]
        lines[i] = "|".join(cells)
    return "\n".join(lines)
