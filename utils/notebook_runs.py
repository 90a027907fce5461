"""Running notebooks headless: each in its own kernel and folder at a preset, timed, its executed copy kept.

`python -m utils.course run` (utils/course.py), `make test` (conftest.py at the repository's root) and
benchmarks/run_notebooks.py all execute notebooks with `run_notebook`; `record_times` keeps the wall times in
benchmarks/times.json, from which `python -m utils.course times` fills the READMEs and notebook headers.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from nbformat import NotebookNode

from utils import notebooks as nbs
from utils.progress_bars import finish_progress_bars
from utils.runtime import PRESETS


@dataclass
class RunResult:
    """One executed notebook: its name, preset, wall time and the error that stopped it (if any)."""

    name: str
    preset: str
    seconds: float
    error: str = ""

    @property
    def ok(self) -> bool:
        """True when every cell ran."""
        return not self.error


def check_preset(preset: str) -> str:
    """`preset` if it is one of smoke, laptop, full; else a ValueError listing them."""
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} is not one of: {', '.join(PRESETS)}.")
    return preset


ERROR_LIMIT = 1000
"""Characters of an error kept in the summary table; a longer one loses its middle, never its end."""


def _shorten(message: str, limit: int = ERROR_LIMIT) -> str:
    """`message` on one line; past `limit` characters the middle is cut, since the advice comes last."""
    message = " ".join(message.split())
    if len(message) <= limit:
        return message
    head = limit // 3
    return f"{message[:head]} … {message[-(limit - head - 3):]}"


def _first_error(nb: NotebookNode) -> str:
    """'cell N: Name: message' for the first error output stored in an executed notebook."""
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return f"cell {index}: {output.get('ename')}: {_shorten(str(output.get('evalue')))}"
    return ""


def _kernel_config() -> "Config":  # noqa: F821 (traitlets imported lazily)
    """Encrypt the connection to the kernel (CurveZMQ) where pyzmq can.

    That is also what ends ipykernel's warning "Kernel is running over TCP without encryption" on every run.
    """
    import zmq
    from traitlets.config import Config

    config = Config()
    # "auto": keys only for a kernel whose spec declares support (ipykernel 7 does), else as before.
    config.KernelManager.transport_encryption = "auto" if zmq.has("curve") else "disabled"
    return config


def run_notebook(path: Path, name: str, preset: str, out: Path, timeout: int = 600) -> RunResult:
    """Execute one notebook in its own folder with COURSE_PRESET=`preset`; write the executed copy to `out`."""
    from nbclient import NotebookClient  # imported here: only `run` needs a kernel
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    nb = nbs.read_notebook(path)
    # The kernel inherits this environment (offline flags, threads) plus the preset. CPU presets get one
    # torch/BLAS thread unless OMP_NUM_THREADS is set, as in `make test`: on a small shared machine two
    # threads per kernel fight each other and a run can take 5x longer, which makes the times meaningless.
    env = {**os.environ, "COURSE_PRESET": check_preset(preset)}
    if preset != "full":
        env.setdefault("OMP_NUM_THREADS", "1")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", config=_kernel_config(),
                            resources={"metadata": {"path": str(path.parent)}})
    start, error = time.perf_counter(), ""
    try:
        client.execute(env=env)
    except (CellExecutionError, CellTimeoutError) as err:
        error = _first_error(nb) or _shorten(str(err).strip().splitlines()[-1])
    seconds = time.perf_counter() - start
    finish_progress_bars(nb, client.widget_state)
    nbs.write_if_changed(out, nbs.notebook_text(nb))  # failed runs too: the error is in the copy
    return RunResult(name, preset, seconds, error)


def run_notebooks(root: Path, paths: list[Path], preset: str, out_dir: Path | None = None,
                  timeout: int = 600) -> list[RunResult]:
    """Run `paths` one after another; executed copies go to `out_dir` (default build/executed/<preset>)."""
    check_preset(preset)
    out_dir = out_dir or root / "build" / "executed" / preset
    results = []
    for path in paths:
        name = nbs.relative_name(path, root)
        print(f"running {name} ({preset}) ...", flush=True)
        results.append(run_notebook(path, name, preset, out_dir / name, timeout))
    return results


def print_table(results: list[RunResult]) -> None:
    """Print one line per run: notebook, preset, seconds, ok/failed (and the error)."""
    width = max([len(r.name) for r in results] + [8])
    print(f"{'notebook':<{width}}  {'preset':<6}  {'seconds':>8}  status")
    for r in results:
        print(f"{r.name:<{width}}  {r.preset:<6}  {r.seconds:8.1f}  {'ok' if r.ok else 'FAILED'}")
        if not r.ok:  # the whole error, wrapped: its last sentence usually says what to do
            pad = " " * (width + 2)
            print(textwrap.fill(r.error, width=width + 80, initial_indent=pad, subsequent_indent=pad))


def machine_description() -> str:
    """'2 CPU cores', plus the GPU name when nvidia-smi reports one (no torch import needed)."""
    text = f"{os.cpu_count()} CPU cores"
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
        gpu = subprocess.run(query, capture_output=True, text=True).stdout.strip().splitlines()
        if gpu:
            text += f", {gpu[0].strip()}"
    return text


def record_times(results: list[RunResult], times_file: Path) -> None:
    """Merge the successful runs into `times_file` ({notebook: {preset: {seconds, date, machine}}})."""
    times = json.loads(times_file.read_text(encoding="utf-8")) if times_file.is_file() else {}
    stamp_ = {"date": datetime.date.today().isoformat(), "machine": machine_description()}
    for r in results:
        if r.ok:  # a failed run's time says nothing about how long the notebook takes
            times.setdefault(r.name, {})[r.preset] = {"seconds": round(r.seconds, 1), **stamp_}
    times_file.parent.mkdir(parents=True, exist_ok=True)
    times_file.write_text(json.dumps(dict(sorted(times.items())), indent=2) + "\n", encoding="utf-8")
