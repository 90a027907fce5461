"""Every notebook of the course is a test: `pytest 0[0-5]_*/` executes each one top to bottom in a fresh kernel.

A notebook runs exactly as `python -m utils.course run` runs it (`utils.course.run_notebook`: nbclient, the
notebook's folder as working directory, one thread per kernel, progress bars finished) and fails on the first
cell that raises. Its executed copy, outputs included, is kept in build/executed/<preset>/: the copies
`make site` builds the course site from, so `make test` executes every notebook once for both. A failed run
leaves no copy there, so a broken notebook is never published.

This file sits at the repository's root because pytest asks only the conftest files above a path whether
they collect it; tests/conftest.py holds the settings of the test suite itself.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
MODULE_FOLDER = re.compile(r"^0[0-5]_")
CELL_TIMEOUT = 300  # seconds a cell may run (nbclient's per-cell timeout)
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the colours of a Jupyter traceback


class NotebookFailed(Exception):
    """A cell raised: the message names the cell and holds its traceback."""


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Collect the course's notebooks (a module folder's *.ipynb), nothing else."""
    if parent.config.getoption("nbval", False) or parent.config.getoption("nbval_lax", False):
        return None  # `pytest --nbval-lax ...`: nbval runs them (without keeping copies); never run them twice
    if file_path.suffix == ".ipynb" and file_path.parent.parent == ROOT and MODULE_FOLDER.match(file_path.parent.name):
        return NotebookFile.from_parent(parent, path=file_path)
    return None


class NotebookFile(pytest.File):
    """One notebook: one test item that executes it."""

    def collect(self):
        yield NotebookRun.from_parent(self, name="runs top to bottom")


def _traceback(executed: Path) -> str:
    """The traceback of the first error stored in an executed notebook, without colour codes."""
    from utils import notebooks as nbs

    for cell in nbs.read_notebook(executed).cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return ANSI.sub("", "\n".join(output.get("traceback", [])))
    return ""


class NotebookRun(pytest.Item):
    """Execute the notebook at COURSE_PRESET (smoke in `make test`); keep the executed copy if every cell ran."""

    def runtest(self) -> None:
        from utils import notebooks as nbs
        from utils.notebook_runs import check_preset, run_notebook

        preset = check_preset(os.environ.get("COURSE_PRESET", "smoke"))
        name = nbs.relative_name(self.path, ROOT)
        out = ROOT / "build" / "executed" / preset / name
        result = run_notebook(self.path, name, preset, out, timeout=CELL_TIMEOUT)
        if not result.ok:
            detail = _traceback(out) if out.exists() else ""
            out.unlink(missing_ok=True)
            raise NotebookFailed(f"{name} ({preset}) failed at {result.error}\n\n{detail}".rstrip())
        # Newer than the notebook even when the outputs came out the same (the copy is then left as it was):
        # make's timestamps tell `make site` it need not execute this notebook again.
        os.utime(out)

    def repr_failure(self, excinfo, style=None) -> str:
        """The failing cell and its traceback, not the plugin's own stack."""
        if isinstance(excinfo.value, NotebookFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.path.name}: runs top to bottom"
