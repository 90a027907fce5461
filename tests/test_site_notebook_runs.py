"""The notebook runs of `make test` (conftest.py at the root) keep the executed copies the course site is built from.

`make test` executes every notebook once; `make site` then finds each copy newer than its notebook and builds
the site from it. This runs the root conftest.py in a small copy of the course layout (two tiny notebooks, a
real kernel) and checks: a notebook that runs keeps a copy with its outputs, progress bar finished as
`python -m utils.course run` leaves it; a notebook that raises fails with its cell's traceback and leaves no copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from nbformat import v4

from utils import notebooks as nbs

pytestmark = pytest.mark.slow  # starts two kernels (~10 s)
ROOT = Path(__file__).resolve().parent.parent


def _write(path: Path, *sources: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = v4.new_notebook(cells=[v4.new_code_cell(source) for source in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.write_text(nbs.notebook_text(nb), encoding="utf-8")


def test_notebook_runs_keep_executed_copies_with_outputs_and_no_copy_of_a_failure(tmp_path):
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    _write(tmp_path / "00_demo" / "01_ok.ipynb", "print('hello from the kernel')",
           "from tqdm.auto import tqdm\nfor _ in tqdm(range(3), desc='steps'):\n    pass",
           "for _ in tqdm(range(400), desc='inner', leave=False):\n    pass")
    _write(tmp_path / "00_demo" / "02_broken.ipynb", "x = 1", "1 / 0")
    stale = tmp_path / "build" / "executed" / "smoke" / "00_demo" / "02_broken.ipynb"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}", encoding="utf-8")  # from an earlier run that passed: must not survive a failure
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COURSE_PRESET": "smoke", "COURSE_DOTENV": os.devnull}
    result = subprocess.run([sys.executable, "-m", "pytest", "00_demo", "-q", "-p", "no:cacheprovider",
                             "-p", "no:xdist", "-p", "no:randomly"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    report = result.stdout + result.stderr
    assert "1 failed, 1 passed" in report, report
    assert "00_demo/02_broken.ipynb (smoke) failed at cell 1: ZeroDivisionError" in report, report
    assert "1 / 0" in report and "\x1b[" not in report, "the failing cell's traceback, without colour codes"
    assert not stale.exists(), "a failed run leaves no copy to publish"

    source = tmp_path / "00_demo" / "01_ok.ipynb"
    executed = tmp_path / "build" / "executed" / "smoke" / "00_demo" / "01_ok.ipynb"
    assert executed.stat().st_mtime >= source.stat().st_mtime, "newer than the notebook, so make runs it no more"
    cells = nbs.read_notebook(executed).cells
    assert "hello from the kernel" in cells[0].outputs[0]["text"]
    bars = [o["data"]["text/plain"] for o in cells[1].outputs if "text/plain" in o.get("data", {})]
    assert bars and "3/3" in bars[0] and "100%" in bars[0], f"the bar in its final state: {bars}"
    assert not cells[2].outputs, f"a leave=False bar hides itself in Jupyter, so the copy has none: {cells[2].outputs}"


def test_with_nbval_asked_for_the_notebooks_are_collected_once(tmp_path):
    """`pytest --nbval-lax`: nbval runs the notebooks; conftest.py steps aside rather than run each twice."""
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    _write(tmp_path / "00_demo" / "01_ok.ipynb", "print('hello')")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COURSE_DOTENV": os.devnull}
    command = [sys.executable, "-m", "pytest", "00_demo", "--collect-only", "-q", "-p", "no:cacheprovider"]
    ours = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120).stdout
    with_nbval = subprocess.run([*command, "--nbval-lax"], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=120).stdout
    assert "01_ok.ipynb::runs top to bottom" in ours, ours
    assert "runs top to bottom" not in with_nbval and "01_ok.ipynb::Cell 0" in with_nbval, with_nbval
