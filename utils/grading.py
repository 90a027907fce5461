"""Grade students' notebooks: `python -m utils.course grade SUBMISSIONS/` (the instructor kit, docs/instructors.md).

A submission is a course notebook a student worked on, found as SUBMISSIONS/<student>/.../<notebook file name>
and matched to the course notebook of the same file name. What runs is the course's own notebook, solutions
edition, with each `solution` cell replaced by the student's answer (the k-th cell tagged `exercise`, or
`solution`, of the submission): every other cell, the self-checks above all, comes from the course, so a
student who deleted the asserts of a check gains nothing, and the release may store its checks anywhere.

An exercise passes when its self-check cell (the code cell after its `solution` cell) runs without an error.
Every submission runs in a kernel of its own, as its own unprivileged user, without network, with memory and
process limits (utils/sandbox.py), in a private temporary copy, within one wall-clock limit for the whole
notebook; a kernel that dies or runs out of time scores the checks it passed before. The report (CSV, table,
plot) is written by utils/grading_report.py.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from utils import notebooks as nbs
from utils import sandbox

UID_BASE = 1_900_000_000  # far above any real account; each submission gets UID_BASE + a number of its own
CODE_ROOT = Path(__file__).resolve().parent.parent  # the folder holding this `utils`: the kernels import it
STATUSES = ("passed", "failed", "not reached", "missing")  # of one exercise
OUTPUT_LIMIT = 1_000_000  # characters of output kept per cell
OUTPUT_CUT = f"\n[the grader kept the first {OUTPUT_LIMIT:,} characters of this cell's output]\n"


@dataclass
class Graded:
    """One submission's result: per exercise a status, plus how the run ended and how long it took."""

    student: str
    notebook: str
    exercises: list[str] = field(default_factory=list)  # one of STATUSES per exercise, in order
    ended: str = "ran to the end"  # or "timed out", "kernel died", "unknown notebook"
    seconds: float = 0.0
    flags: list[str] = field(default_factory=list)  # answers that redefine a check: worth a look

    @property
    def score(self) -> int:
        """Exercises passed."""
        return self.exercises.count("passed")


# --- which cells: the course's notebook with the student's answers ---------------------------------


def find_submissions(folder: Path) -> list[tuple[str, Path]]:
    """(student, path) for every notebook under `folder`; the student is the first folder below it."""
    if not folder.is_dir():
        raise ValueError(f"no folder of submissions at {folder}.")
    found = []
    for path in sorted(folder.rglob("*.ipynb")):
        parts = path.relative_to(folder).parts
        if ".ipynb_checkpoints" not in parts:
            found.append((parts[0] if len(parts) > 1 else folder.name, path))
    return found


def answer_cells(nb: nbformat.NotebookNode) -> list[int]:
    """Indexes of the code cells that hold answers: tagged `exercise` (the release) or `solution`."""
    return [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            and {"exercise", "solution"} & set(nbs.cell_tags(cell))]


def check_cells(nb: nbformat.NotebookNode) -> list[int]:
    """Index of the self-check cell of each exercise: the first code cell after each `solution` cell."""
    return [next(j for j in range(i + 1, len(nb.cells)) if nb.cells[j].cell_type == "code") for i in answer_cells(nb)]


def redefined_checks(source: str) -> list[str]:
    """The course's check names (`check_...`, `CheckFailed`) that an answer binds anew: def, =, import."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []  # it fails its check anyway
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Store):
            names.add(node.id if isinstance(node, ast.Name) else node.attr)
        elif isinstance(node, ast.ImportFrom) and node.module != "utils.checks":  # the real ones are fine
            names.update(alias.asname or alias.name for alias in node.names)
    return sorted(n for n in names if n.startswith("check_") or n == "CheckFailed")


def graded_notebook(course: nbformat.NotebookNode, submitted: nbformat.NotebookNode
                    ) -> tuple[nbformat.NotebookNode, int, list[str]]:
    """The course notebook with the submission's answers in its `solution` cells; answers found; flags."""
    nb = nbformat.from_dict(course)  # a copy
    answers, flags = answer_cells(submitted), []
    for k, index in enumerate(answer_cells(nb)):
        cell = nb.cells[index]
        if k < len(answers):
            cell.source = submitted.cells[answers[k]].source
            flags += [f"exercise {k + 1} redefines {name}" for name in redefined_checks(cell.source)]
        else:  # the student removed the cell: a clear failure, not the course's own solution
            cell.source = f"raise NotImplementedError('exercise {k + 1}: no answer in the submission')"
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb, len(answers), flags


# --- running one submission ------------------------------------------------------------------------


def _kernel_env(box: Path, preset: str, cache: Path | None) -> dict[str, str]:
    """The kernel's whole environment: nothing of the grader's (no API keys, no proxies), offline."""
    return {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.defpath}", "HOME": str(box),
            "TMPDIR": str(box), "PYTHONPATH": str(CODE_ROOT), "LANG": "C.UTF-8", "COURSE_PRESET": preset,
            "COURSE_CACHE": str(cache or box / ".cache"), "COURSE_DOTENV": os.devnull, "COURSE_OFFLINE": "1",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "0"}


def _kernel_manager(box: Path, uid: int | None, memory_bytes: int) -> "AsyncKernelManager":  # noqa: F821
    """A kernel manager whose kernel starts through utils.sandbox (uid None: unsandboxed, trusted runs)."""
    from jupyter_client.manager import AsyncKernelManager

    class SandboxedKernelManager(AsyncKernelManager):
        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            cmd = super().format_kernel_cmd(extra_arguments)
            if uid is None:
                return cmd
            return [sys.executable, "-m", "utils.sandbox", str(uid), str(memory_bytes), "--", *cmd]

    # ipc: the kernel's sockets are files in its folder, reachable from outside its network namespace.
    km = SandboxedKernelManager(kernel_name="python3", transport="ipc")
    km.connection_file = str(box / "kernel.json")
    return km


def _capped_client_class() -> type:
    """nbclient's NotebookClient, keeping at most OUTPUT_LIMIT characters of output per cell.

    A submission that prints gigabytes would otherwise fill the grader's memory and the executed copy.
    """
    from nbclient import NotebookClient

    class CappedClient(NotebookClient):
        def output(self, outs: list, msg: dict, display_id: str | None, cell_index: int) -> object:
            size = self.__dict__.setdefault("_sizes", {}).get(cell_index, 0) + len(str(msg.get("content", "")))
            self._sizes[cell_index] = size
            if size <= OUTPUT_LIMIT:
                return super().output(outs, msg, display_id, cell_index)
            if not outs or outs[-1].get("text") != OUTPUT_CUT:  # say so once, then drop the rest
                outs.append(nbformat.v4.new_output("stream", name="stderr", text=OUTPUT_CUT))
            return None

    return CappedClient


def run_graded(nb: nbformat.NotebookNode, box: Path, uid: int | None, preset: str, time_limit: float,
               memory_bytes: int, cache: Path | None = None) -> tuple[str, float, int]:
    """Execute `nb` in place in folder `box`: (how it ended, seconds, last cell started). Errors do not stop it."""
    from jupyter_core.utils import run_sync
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    km = _kernel_manager(box, uid, memory_bytes)
    first_cell: list[float] = []  # when the first cell started

    def time_left(cell: object) -> int:
        """One limit for the whole notebook, from its first cell: each cell may use what the others left."""
        first_cell[:] = first_cell or [time.monotonic()]
        return max(1, int(first_cell[0] + time_limit - time.monotonic()))

    # Starting the kernel has its own limit (startup_timeout), so a busy machine does not eat the notebook's.
    client = _capped_client_class()(nb, km=km, allow_errors=True, kernel_name="python3", startup_timeout=120,
                            timeout_func=time_left,
                            resources={"metadata": {"path": str(box)}})
    started = [-1]
    client.on_cell_execute = lambda cell, cell_index: started.append(cell_index)
    start, ended = time.monotonic(), "ran to the end"
    try:
        client.execute(env=_kernel_env(box, preset, cache))
    except CellTimeoutError:
        ended = "timed out"
    except (DeadKernelError, RuntimeError):  # RuntimeError: died before it answered at all
        ended = "kernel died"
    finally:
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)
        if uid is not None:
            sandbox.clean_up(uid)  # whatever it started or left in /tmp goes with it
    return ended, time.monotonic() - start, started[-1]


def exercise_statuses(nb: nbformat.NotebookNode, answers: int, last_started: int, ended: str) -> list[str]:
    """One of STATUSES per exercise, from its self-check cell in the executed notebook."""
    statuses = []
    for k, index in enumerate(check_cells(nb)):
        errors = any(o.get("output_type") == "error" for o in nb.cells[index].outputs)
        if k >= answers:
            statuses.append("missing")
        elif index > last_started:
            statuses.append("not reached")
        elif errors or (index == last_started and ended != "ran to the end"):
            statuses.append("failed")  # an error, or the cell the kernel died or ran out of time in
        else:
            statuses.append("passed")
    return statuses


# --- grading a folder ------------------------------------------------------------------------------


def _check_sandbox(work: Path, uid: int, memory_bytes: int) -> None:
    """Fail early, with the reason, when a sandboxed kernel could not even start Python here."""
    box = work / "preflight"
    box.mkdir()
    probe = [sys.executable, "-m", "utils.sandbox", str(uid), str(memory_bytes), "--",
             sys.executable, "-c", "import ipykernel, utils.checks"]
    env = {"PATH": os.defpath, "HOME": str(box), "PYTHONPATH": str(CODE_ROOT)}
    done = subprocess.run(probe, cwd=box, env=env, capture_output=True, text=True, timeout=120)
    sandbox.clean_up(uid)
    if done.returncode:
        raise ValueError("a sandboxed kernel cannot start here; the unprivileged user must be able to read "
                         f"{sys.prefix} and {CODE_ROOT}:\n{done.stderr.strip()[-800:]}")


def grade_one(student: str, path: Path, course: dict[str, Path], work: Path, uid: int | None,
              settings: dict) -> tuple[Graded, nbformat.NotebookNode | None]:
    """Grade one submitted notebook in a fresh folder under `work`; returns the result and the executed copy."""
    if path.name not in course:
        return Graded(student, path.name, ended="unknown notebook"), None
    source = nbs.read_notebook(course[path.name])
    try:
        submitted = nbs.read_notebook(path)
    except Exception:  # not JSON, not a notebook: every exercise is missing
        submitted = nbformat.v4.new_notebook()
    nb, answers, flags = graded_notebook(source, submitted)
    box = Path(tempfile.mkdtemp(dir=work))
    try:
        ended, seconds, last = run_graded(nb, box, uid, **settings)
    finally:
        shutil.rmtree(box, ignore_errors=True)
    name = nbs.relative_name(course[path.name], course[path.name].parents[1])
    return Graded(student, name, exercise_statuses(nb, answers, last, ended), ended, seconds, flags), nb


def grade(root: Path, submissions: Path, out: Path, *, preset: str = "smoke", time_limit: float = 600,
          memory_gib: float = 8, cache: Path | None = None, use_sandbox: bool = True) -> list[Graded]:
    """Grade every notebook under `submissions` against the course at `root`; executed copies go to `out`."""
    from utils.grading_report import write_report

    if use_sandbox and (reason := sandbox.available()):
        raise ValueError(f"{reason} Only for notebooks you trust (your own): --no-sandbox runs them as you.")
    if out.resolve() == submissions.resolve() or submissions.resolve() in out.resolve().parents:
        raise ValueError(f"--out {out} lies inside the submissions; choose a folder outside {submissions}.")
    course = {p.name: p for p in nbs.find_notebooks(root)}
    found, memory = find_submissions(submissions), int(memory_gib * 2**30)
    settings = {"preset": preset, "time_limit": time_limit, "memory_bytes": memory, "cache": cache}
    results = []
    # The kernels' folders live in a folder others may pass through but not list (0711): each kernel
    # reaches its own, whose random name it is given, and nothing else there.
    with tempfile.TemporaryDirectory(prefix="grading-") as tmp:
        work = Path(tmp)
        work.chmod(0o711)
        uid_base = UID_BASE + (os.getpid() % 10_000) * 10_000  # two graders at once never share a uid
        if use_sandbox:
            _check_sandbox(work, uid_base, memory)
        for number, (student, path) in enumerate(found, start=1):
            print(f"grading {student}: {path.name} ...", flush=True)
            uid = uid_base + number if use_sandbox else None
            graded, executed = grade_one(student, path, course, work, uid, settings)
            results.append(graded)
            if executed is not None:
                nbs.write_if_changed(out / "executed" / student / path.name, nbs.notebook_text(executed))
    write_report(results, out)
    return results
