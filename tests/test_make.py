"""The README's commands: `make lab` serves the whole course on loopback with the course environment as its
default kernel, `make run` honours COURSE_PRESET, an existing (conda) environment is used as it is, and a
second install has nothing to do.

The tests that start JupyterLab or install run only inside the course's own .venv (which `make test`
creates). Each one runs with an empty HOME and Jupyter folders in tmp dirs, so it neither reads nor changes
the user's own kernels, and it ends the processes it starts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from utils.servers import non_loopback_address

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
IN_COURSE_VENV = Path(sys.prefix).resolve() == VENV.resolve()
needs_course_venv = pytest.mark.skipif(not IN_COURSE_VENV, reason="needs the .venv that `make test` builds")
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")

LANDING = "00_prerequisites/00_start_here.ipynb"
OTHER_MODULE_NOTEBOOK = "01_deep_learning/01_neural_networks_from_scratch.ipynb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(home: Path | None = None, **extra: str) -> dict[str, str]:
    """This process's environment without what would leak into a nested `make` (the outer `make test`'s
    MAKEFLAGS carry its command-line variables; TEST_ENV sets COURSE_PRESET), with HOME and the Jupyter
    folders moved to `home` when given."""
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "COURSE_PRESET", "PRESET", "VENV", "JUPYTER_PATH",
            "JUPYTER_PREFER_ENV_PATH", "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if home is not None:
        env.update(HOME=str(home), JUPYTER_DATA_DIR=str(home / "data"),
                   JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"))
    return {**env, **extra}


def _make(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["make", *args], cwd=cwd, env=env or _clean_env(), capture_output=True, text=True)


def _prefix_of(python: str) -> Path:
    """The sys.prefix of the interpreter a kernelspec's argv[0] names (resolved, so symlinks compare)."""
    out = subprocess.run([python, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True,
                         check=True).stdout.strip()
    return Path(out).resolve()


@needs_course_venv
def test_a_second_install_has_nothing_to_do():
    # `make -q` asks whether the target is up to date without running anything: exit 0 means yes.
    result = _make("-q", "install")
    assert result.returncode == 0, "make install would reinstall although nothing changed"


# --- make lab ------------------------------------------------------------------------------------------


class Lab:
    """A `make lab` started for the tests: its base URL, token and the empty HOME it runs with."""

    def __init__(self, base: str, token: str, home: Path, port: int):
        self.base, self.token, self.home, self.port = base, token, home, port
        # The token in the first URL logs in with a cookie; redirects carry the cookie, not the token.
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())

    def get(self, path: str):
        sep = "&" if "?" in path else "?"
        return self.opener.open(f"{self.base}{path}{sep}token={self.token}", timeout=10)

    def json(self, path: str) -> dict:
        with self.get(path) as r:
            return json.loads(r.read().decode())


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """`make lab` with an empty HOME (so the course kernel was never registered there, the state after
    `jupyter kernelspec remove genai-course`) that holds a decoy user-level `python3` kernelspec, searched
    before the environment's own (JUPYTER_PREFER_ENV_PATH=0, as in a conda base or a shared install)."""
    home = tmp_path_factory.mktemp("home")
    decoy = home / "data" / "kernels" / "python3"
    decoy.mkdir(parents=True)
    (decoy / "kernel.json").write_text(json.dumps({
        "argv": [sys.base_prefix + "/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (decoy in ~/.local)", "language": "python"}))
    port, token = _free_port(), "course-test-token"
    args = f"--no-browser --ServerApp.port={port} --IdentityProvider.token={token}"
    env = _clean_env(home, JUPYTER_PREFER_ENV_PATH="0")
    proc = subprocess.Popen(["make", "lab", f"LAB_ARGS={args}"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server = Lab(f"http://127.0.0.1:{port}", token, home, port)
    try:
        deadline, last_error = time.monotonic() + 90, None
        while time.monotonic() < deadline:
            try:
                server.json("/api/status")
                break
            except OSError as error:
                last_error = error
                assert proc.poll() is None, f"make lab exited early:\n{proc.stdout.read()}"
                time.sleep(1)
        else:
            pytest.fail(f"JupyterLab did not answer on {server.base} within 90 s: {last_error}")
        yield server
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # make and the jupyter server it started, one process group
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@needs_course_venv
def test_make_lab_serves_every_module_and_lands_on_the_start_here_notebook(lab):
    # The course map in the start-here notebook links to the other modules: they must be served.
    with lab.get(f"/api/contents/{OTHER_MODULE_NOTEBOOK}?content=0") as r:
        assert r.status == 200 and json.loads(r.read())["type"] == "notebook"
    # Opening the server's address lands on the start-here notebook, in JupyterLab.
    with lab.get("/") as r:
        assert r.status == 200 and "JupyterLab" in r.read().decode()
        assert urllib.request.urlparse(r.geturl()).path == f"/lab/tree/{LANDING}"


@needs_course_venv
def test_make_lab_opens_python3_notebooks_on_the_course_environment(lab):
    # The notebooks name the portable `python3` kernel; inside `make lab` it must be this environment,
    # even with a user-level `python3` kernelspec searched first.
    specs = lab.json("/api/kernelspecs")
    assert specs["default"] == "python3"
    argv = specs["kernelspecs"]["python3"]["spec"]["argv"]
    assert _prefix_of(argv[0]) == VENV.resolve(), f"python3 runs {argv[0]}, not the course .venv"


@needs_course_venv
def test_make_lab_registers_the_course_kernel_again(lab):
    # HOME started empty: `make lab` itself must (re)register the named kernel for other frontends.
    specs = lab.json("/api/kernelspecs")
    assert "genai-course" in specs["kernelspecs"], "the course kernel is not registered"
    registered = json.loads((lab.home / "data" / "kernels" / "genai-course" / "kernel.json").read_text())
    assert _prefix_of(registered["argv"][0]) == VENV.resolve()
    assert registered["display_name"] == "Generative AI course (.venv)"


@needs_course_venv
def test_make_lab_listens_on_loopback_only(lab):
    outside = non_loopback_address()
    if outside is None:
        pytest.skip("this machine has no address outside loopback to try")
    with socket.socket() as s:
        s.settimeout(2)
        assert s.connect_ex((outside, lab.port)) != 0, "JupyterLab listens beyond 127.0.0.1"


# --- make run: which preset ----------------------------------------------------------------------------


def _run_command(*make_args: str, **env: str) -> str:
    """The `utils.course run` line that `make -n run` would execute (a dry run: nothing is executed)."""
    result = _make("-n", "run", "NB=00_prerequisites/00_start_here.ipynb", *make_args, env=_clean_env(**env))
    assert result.returncode == 0, result.stderr
    lines = [l for l in result.stdout.splitlines() if "utils.course run" in l]
    assert len(lines) == 1, result.stdout
    return lines[0]


@needs_make
def test_make_run_honours_course_preset_from_the_environment():
    assert re.search(r"--preset laptop\b", _run_command(COURSE_PRESET="laptop"))


@needs_make
def test_make_run_preset_on_the_command_line_wins_over_the_environment():
    assert re.search(r"--preset full\b", _run_command("PRESET=full", COURSE_PRESET="laptop"))


@needs_make
def test_make_run_without_a_preset_leaves_the_choice_to_the_course_cli():
    # utils.course reads COURSE_PRESET / .env itself and prints the preset it runs at.
    assert "--preset" not in _run_command()


# --- an existing environment (conda) -------------------------------------------------------------------


@needs_make
def test_an_empty_venv_is_refused_before_anything_runs():
    # `make lab VENV=$CONDA_PREFIX` with no conda environment active must not fall back to /bin/python.
    result = _make("-n", "lab", "VENV=")
    assert result.returncode != 0 and "CONDA_PREFIX" in result.stderr


def _a_python_the_course_does_not_support() -> str | None:
    """An installed python3.10 or 3.13 that runs (pyenv shims exist for versions that are not selected)."""
    for name in ("python3.13", "python3.10", "python3.9"):
        path = shutil.which(name)
        if path and subprocess.run([path, "-c", ""], capture_output=True).returncode == 0:
            return path
    return None


@needs_make
def test_an_environment_on_an_unsupported_python_is_refused_before_pip_runs(tmp_path):
    python = _a_python_the_course_does_not_support()
    if python is None:
        pytest.skip("no python3.13 / 3.10 / 3.9 on this machine")
    env_dir = tmp_path / "old-env"
    subprocess.run([python, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    result = _make("install", f"VENV={env_dir}", env=_clean_env(tmp_path / "home"))
    assert result.returncode != 0 and "needs Python 3.11 or 3.12" in result.stderr
    assert "pip install" not in result.stdout and not (env_dir / ".installed").exists()


def _copy_of_the_course(dest: Path) -> Path:
    """The course files without .venv, .git and build outputs: a fresh clone, as far as make can tell."""
    skip = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache")
    return Path(shutil.copytree(ROOT, dest, ignore=skip))


def _second_environment(path: Path) -> Path:
    """A venv with the same interpreter that sees the course .venv's packages through a .pth file: a stand-in
    for `conda env create -f environment.yml` (same pins) that installs nothing from the network."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    course_site = next(p for p in sys.path if p.startswith(str(VENV)) and p.endswith("site-packages"))
    (path / "lib" / version / "site-packages" / "course-pins.pth").write_text(course_site + "\n")
    return path


@needs_course_venv
def test_make_with_an_existing_environment_uses_it_and_never_creates_dot_venv(tmp_path):
    course, env_dir = _copy_of_the_course(tmp_path / "course"), _second_environment(tmp_path / "conda-env")
    env = _clean_env(tmp_path / "home")
    result = _make("install", "kernel", f"VENV={env_dir}", env=env, cwd=course)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (course / ".venv").exists(), "make created .venv although VENV names an environment"
    assert (env_dir / ".installed").exists()
    # `pip install -e .` went into that environment and points at this copy of the course.
    where = subprocess.run([env_dir / "bin" / "python", "-c", "import utils; print(utils.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).resolve().is_relative_to(course.resolve())
    # Both kernels run that environment's python: python3 inside it, genai-course for other frontends.
    for spec in (env_dir / "share" / "jupyter" / "kernels" / "python3" / "kernel.json",
                 tmp_path / "home" / "data" / "kernels" / "genai-course" / "kernel.json"):
        assert Path(json.loads(spec.read_text())["argv"][0]) == env_dir / "bin" / "python", spec
    # ... and `make lab` would start that environment's JupyterLab.
    dry = _make("-n", "lab", f"VENV={env_dir}", env=env, cwd=course)
    assert f"{env_dir}/bin/jupyter lab" in dry.stdout and ".venv" not in dry.stdout
